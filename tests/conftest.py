"""Shared fixtures: real models, loaded once per test session, over temporary data dirs."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SQUAD = SHARED / "eval" / "squad-train"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ARTIFACTS = ROOT / "test-artifacts"
# The default embeddings.runtime (onnx-int8) exports the embedder once per data dir (~10 s): every test
# data dir, child processes included, shares one export instead (rag/models/embeddings.py, RAG_ONNX_CACHE).
os.environ.setdefault("RAG_ONNX_CACHE", str(ARTIFACTS / "onnx-cache"))
# Likewise the LLM's one-time re-quantization (llm.requantize; rag/models/gguf_quantize.py).
os.environ.setdefault("RAG_GGUF_CACHE", str(ARTIFACTS / "gguf-cache"))

# CI replays the same examples every run (a gate must not flip on a new random draw); local runs
# keep drawing new ones, which is how the CGNAT hole in the URL guard was found.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")


# Tests that use these fixtures load real models or start real servers: they are integration tests,
# marked `slow`, so `./test.sh -m "not web and not slow"` runs the unit tests alone in a minute or two.
HEAVY_FIXTURES = {"base_engines", "squad_engines", "pg_server", "web_server", "web_server_with_login"}


def pytest_collection_modifyitems(items):
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def make_config(data_dir: Path, *overrides: str):
    from rag.config import load_config

    return load_config(ROOT / "config.yaml", list(overrides), str(data_dir))


@pytest.fixture(scope="session")
def base_engines(tmp_path_factory):
    """Engines over a copy of the shipped txt/ folder, with the embedder and LLM loaded."""
    from rag.engines import Engines

    folder = tmp_path_factory.mktemp("docs") / "txt"
    shutil.copytree(ROOT / "txt", folder)
    cfg = make_config(tmp_path_factory.mktemp("data"), f"documents.folder={folder}")
    engines = Engines(cfg)
    report = engines.ensure_documents(progress=False)
    assert report is not None and report.added == len(list(folder.iterdir()))
    return engines


def engines_like(base, data_dir: Path, *overrides: str):
    """A fresh Engines on its own data dir that reuses base's loaded models (loading is slow)."""
    from rag.engines import Engines

    engines = Engines(make_config(data_dir, *overrides))
    base.embedder                  # every caller needs it: load it once, in base
    engines.share_models(base)
    return engines


@pytest.fixture(scope="session")
def squad_engines(base_engines, tmp_path_factory):
    engines = engines_like(base_engines, tmp_path_factory.mktemp("squad"), "documents.folder=null")
    report = engines.ingestor.ingest([str(SQUAD / "docs")], progress=False)
    assert report.added == 40 and not report.errors
    return engines


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
