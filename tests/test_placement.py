"""The pure placement planner on described GPU sets (no GPU needed), and every shipped profile."""
from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import load_config
from common.errors import BackendError
from rag.models.placement import (EMBEDDER_GIB, WHISPER_GIB, GpuInfo, PlacementError, estimate_model_gib,
                           plan_placement)

MISTRAL_7B = 7.24          # billion parameters (Mistral-7B-Instruct-v0.2)
LLAMA_70B = 70.6
ROOT = Path(__file__).resolve().parents[1]


def t4(i: int) -> GpuInfo:      # a 16 GB card as CUDA reports it, with the driver's share used
    return GpuInfo("Tesla T4", 14.58, 14.48, i)


def test_estimates_follow_bytes_per_parameter():
    assert estimate_model_gib(MISTRAL_7B, "nf4") == pytest.approx(3.71, abs=0.05)   # 0.55 B/param
    assert estimate_model_gib(MISTRAL_7B, "bf16") == pytest.approx(13.49, abs=0.05)
    assert estimate_model_gib(1.0, "fp32") == pytest.approx(2 * estimate_model_gib(1.0, "bf16"))
    with pytest.raises(ValueError, match="unknown quantization"):
        estimate_model_gib(7, "int3")


def test_two_16gb_cards_with_7b_nf4_get_one_replica_each():
    plan = plan_placement([t4(0), t4(1)], estimate_model_gib(MISTRAL_7B, "nf4"))
    assert plan.mode == "replicas"
    assert plan.replicas == ("cuda:0", "cuda:1")
    assert plan.n_replicas == 2
    assert plan.load_kwargs(1) == {"device_map": {"": "cuda:1"}}
    assert plan.max_memory_gib == ()
    # both small models fit next to a replica; they are spread over the two cards
    assert {plan.embedder_device, plan.whisper_device} == {"cuda:0", "cuda:1"}
    text = "\n".join(plan.describe())
    assert "2 replica(s)" in text and "least-busy" in text and "cuda:1 Tesla T4" in text


def test_one_8gb_card_holds_7b_nf4_plus_embedder_and_whisper():
    gpu = GpuInfo("RTX 3070", 7.79, 7.6)
    model = estimate_model_gib(MISTRAL_7B, "nf4")
    plan = plan_placement([gpu], model, embedder_gib=EMBEDDER_GIB, whisper_gib=WHISPER_GIB)
    assert plan.mode == "replicas" and plan.replicas == ("cuda:0",)
    assert plan.embedder_device == "cuda:0" and plan.whisper_device == "cuda:0"
    left = dict(plan.free_after_gib)["cuda:0"]
    assert left == pytest.approx(7.6 - model - plan.headroom_gib - EMBEDDER_GIB - WHISPER_GIB, abs=0.01)
    assert left > 0


def test_small_models_fall_back_to_cpu_when_the_card_is_full():
    gpu = GpuInfo("RTX 3060 Laptop", 6.0, 5.6)
    plan = plan_placement([gpu], estimate_model_gib(MISTRAL_7B, "nf4"))   # 3.7 + 1.5 leaves ~0.4 GiB
    assert plan.mode == "replicas"
    assert plan.embedder_device == "cpu" and plan.whisper_device == "cpu"


def test_cpu_only():
    plan = plan_placement([], estimate_model_gib(0.135, "fp32"))
    assert plan.mode == "cpu" and plan.replicas == ("cpu",) and plan.n_replicas == 1
    assert plan.embedder_device == "cpu" and plan.whisper_device == "cpu"
    assert plan.load_kwargs(0) == {"device_map": {"": "cpu"}}
    assert "CPU only" in plan.describe()[0]


def test_70b_bf16_is_split_across_two_80gb_cards_with_max_memory():
    h100 = [GpuInfo("H100 80GB", 79.2, 78.6, 0), GpuInfo("H100 80GB", 79.2, 78.6, 1)]
    model = estimate_model_gib(LLAMA_70B, "bf16")          # ~131.5 GiB: fits on neither card alone
    plan = plan_placement(h100, model)
    assert plan.mode == "split" and plan.n_replicas == 1
    assert dict(plan.max_memory_gib) == {0: pytest.approx(78.6 - plan.headroom_gib),
                                         1: pytest.approx(78.6 - plan.headroom_gib)}
    assert plan.load_kwargs(0) == {"device_map": "auto", "max_memory": {0: "77.10GiB", 1: "77.10GiB"}}
    left = dict(plan.free_after_gib)
    # balanced: half the weights on each card, plus the KV headroom each keeps
    assert left["cuda:0"] + left["cuda:1"] == pytest.approx(
        2 * 78.6 - model - 2 * plan.headroom_gib - EMBEDDER_GIB - WHISPER_GIB, abs=0.05)
    assert plan.embedder_device.startswith("cuda:") and plan.whisper_device.startswith("cuda:")
    assert "split across 2 GPUs" in plan.describe()[0]


def test_uneven_split_fills_the_smaller_card_to_its_cap():
    gpus = [GpuInfo("A", 24.0, 23.5, 0), GpuInfo("B", 12.0, 11.5, 1)]
    plan = plan_placement(gpus, 28.0)
    assert plan.mode == "split"
    left = dict(plan.free_after_gib)
    assert left["cuda:1"] - (WHISPER_GIB if plan.whisper_device == "cuda:1" else 0) \
        - (EMBEDDER_GIB if plan.embedder_device == "cuda:1" else 0) == pytest.approx(0.0, abs=0.01)
    assert left["cuda:0"] >= 0


def test_a_model_too_big_for_all_gpus_is_a_clear_error():
    gpus = [GpuInfo("RTX 4090", 23.6, 23.2, 0), GpuInfo("RTX 4090", 23.6, 23.2, 1)]
    with pytest.raises(PlacementError) as caught:
        plan_placement(gpus, estimate_model_gib(LLAMA_70B, "bf16"))
    message = str(caught.value)
    assert isinstance(caught.value, BackendError)
    assert "131.5 GiB" in message and "cuda:1 23.2 GiB free" in message and "nf4" in message


@pytest.mark.parametrize("profile", sorted((ROOT / "profiles").glob("*.yaml")), ids=lambda p: p.name)
def test_every_profile_validates_and_says_what_memory_it_needs(profile):
    cfg = load_config(profile)
    first = profile.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("#") and ("GiB" in first or "GB" in first), first
    assert cfg.llm.backend in ("llamacpp", "transformers", "openai")


def test_profiles_exist_and_cpu_matches_the_default_config():
    names = {p.name for p in (ROOT / "profiles").glob("*.yaml")}
    assert {"cpu.yaml", "gpu-1.yaml", "seed-2gpu.yaml", "served.yaml"} <= names
    assert load_config(ROOT / "profiles" / "cpu.yaml") == load_config(ROOT / "config.yaml")
    seed = load_config(ROOT / "profiles" / "seed-2gpu.yaml")
    assert (seed.llm.backend, seed.llm.model, seed.llm.quantization) == (
        "transformers", "mistralai/Mistral-7B-Instruct-v0.2", "nf4")
    assert seed.embeddings.model == "shipped:all-mpnet-base-v2"
    assert (seed.asr.model, seed.asr.device, seed.asr.compute_type) == ("shipped:whisper-base", "auto", "auto")
    assert (seed.llm.device, seed.embeddings.device) == ("auto", "auto")
    served = load_config(ROOT / "profiles" / "served.yaml")
    assert served.llm.backend == "openai" and served.llm.base_url == "http://127.0.0.1:8000/v1"


# -- the same path Engines takes: plan_engines (GPU discovery stubbed) -> apply_plan ----------------
SEED = ROOT / "profiles" / "seed-2gpu.yaml"


@pytest.fixture
def two_t4(monkeypatch):
    """A described machine with two 16 GB cards, and Mistral-7B NF4's size (its config is not here)."""
    import rag.models.llm_hf
    import rag.models.placement

    monkeypatch.setattr(rag.models.placement, "detect_gpus", lambda: [t4(0), t4(1)])
    monkeypatch.setattr(rag.models.llm_hf, "model_gib", lambda cfg, cache_dir: estimate_model_gib(MISTRAL_7B, "nf4"))


def seed_engines(tmp_path, *overrides):
    from rag.engines import Engines

    return Engines(load_config(SEED, list(overrides), str(tmp_path)))


def test_seed_profile_on_two_16gb_cards_resolves_auto_devices_from_the_plan(two_t4, tmp_path, caplog):
    caplog.set_level("INFO", logger="rag.engines")
    engines = seed_engines(tmp_path)
    plan = engines.placement
    assert plan.mode == "replicas" and plan.replicas == ("cuda:0", "cuda:1")
    placed = engines.placed
    # the embedder goes where most memory is left (a tie: the lower ordinal), Whisper then to the card
    # with more left, in float16 there
    assert placed.embeddings.device == plan.embedder_device == "cuda:0"
    assert plan.whisper_device == "cuda:1" and plan.whisper_compute_type == "float16"
    assert (placed.asr.device, placed.asr.compute_type) == ("cuda:1", "float16")
    assert placed.llm == engines.cfg.llm          # the model's placement is the plan itself
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("placement:")]
    assert len(logged) == 1                       # one block, once
    assert "2 replica(s)" in logged[0] and "embedder -> cuda:0" in logged[0] and "whisper -> cuda:1 (float16)" in logged[0]
    assert engines.placement is plan and len([r for r in caplog.records if "placement:" in r.getMessage()]) == 1


def test_explicit_pins_are_kept_and_counted_first(two_t4, tmp_path):
    engines = seed_engines(tmp_path, "embeddings.device=cuda:1", "asr.device=cpu", "asr.compute_type=int8")
    plan = engines.placement
    assert (engines.placed.embeddings.device, engines.placed.asr.device, engines.placed.asr.compute_type) == (
        "cuda:1", "cpu", "int8")
    left = dict(plan.free_after_gib)
    assert left["cuda:1"] == pytest.approx(left["cuda:0"] - EMBEDDER_GIB, abs=0.01)


def test_a_pin_to_a_missing_gpu_is_a_clear_error(two_t4, tmp_path):
    with pytest.raises(PlacementError, match="asr.device is 'cuda:2'"):
        seed_engines(tmp_path, "asr.device=cuda:2").placement


def test_auto_on_a_machine_without_cuda_is_the_cpu(monkeypatch, tmp_path):
    import rag.models.llm_hf
    import rag.models.placement

    monkeypatch.setattr(rag.models.placement, "detect_gpus", lambda: [])
    monkeypatch.setattr(rag.models.llm_hf, "model_gib", lambda *a: pytest.fail("no GPU: the size is not needed"))
    engines = seed_engines(tmp_path, "llm.quantization=none")
    assert engines.placement.mode == "cpu" and "CPU only" in engines.placement.describe()[0]
    placed = engines.placed
    assert (placed.llm.device, placed.embeddings.device, placed.asr.device, placed.asr.compute_type) == (
        "cpu", "cpu", "cpu", "int8")


def test_an_all_cpu_config_never_looks_for_gpus(monkeypatch, tmp_path):
    import rag.models.placement

    monkeypatch.setattr(rag.models.placement, "detect_gpus", lambda: pytest.fail("nothing asked for a GPU"))
    cfg = load_config(ROOT / "config.yaml", [], str(tmp_path))
    plan = rag.models.placement.plan_engines(cfg, tmp_path)
    assert plan.mode == "cpu" and rag.models.placement.apply_plan(cfg, plan) == cfg


def test_a_served_model_leaves_the_gpus_to_the_embedder_and_whisper(monkeypatch, tmp_path):
    import rag.models.placement

    monkeypatch.setattr(rag.models.placement, "detect_gpus", lambda: [GpuInfo("RTX 3060", 12.0, 11.5, 0)])
    cfg = load_config(ROOT / "profiles" / "served.yaml", ["embeddings.device=auto", "asr.device=auto",
                                                          "asr.compute_type=auto"], str(tmp_path))
    plan = rag.models.placement.plan_engines(cfg, tmp_path)
    assert plan.mode == "server" and plan.replicas == ()
    assert (plan.embedder_device, plan.whisper_device, plan.whisper_compute_type) == ("cuda:0", "cuda:0", "float16")
    assert "served by another process" in plan.describe()[0]


def test_whisper_gpus_limit_where_auto_puts_whisper():
    plan = plan_placement([t4(0), t4(1)], 1.0, whisper_gpus=[1])
    assert plan.whisper_device == "cuda:1"
    assert plan_placement([t4(0)], 1.0, whisper_gpus=[]).whisper_device == "cpu"


def test_a_device_typo_is_a_config_error(tmp_path):
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="embeddings.device"):
        load_config(SEED, ["embeddings.device=cude"], str(tmp_path))


def test_faster_whisper_gets_the_gpu_ordinal_as_ctranslate2_wants_it():
    from asr.faster_whisper_backend import _device_and_compute

    assert _device_and_compute("cuda:1", "auto") == ("cuda", 1, "float16")   # CTranslate2 rejects "cuda:1"
    assert _device_and_compute("cuda", "int8_float16") == ("cuda", 0, "int8_float16")
    assert _device_and_compute("cpu", "auto") == ("cpu", 0, "int8")
