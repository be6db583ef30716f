"""The default embedder runtime, onnx-int8: exported once and reused, and its vectors those of torch."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.slow      # loads the model twice (torch and onnxruntime)
def test_onnx_int8_is_exported_once_and_embeds_like_torch(tmp_path, caplog):
    from rag.config import EmbeddingsConfig
    from rag.models.embeddings import ensure_onnx, load_embedder, onnx_folder

    model = "shipped:all-MiniLM-L6-v2"
    folder = onnx_folder(model, tmp_path / "cache")
    assert folder.parent == Path(os.environ["RAG_ONNX_CACHE"])      # shared by every test data dir (conftest)
    int8 = load_embedder(EmbeddingsConfig(runtime="onnx-int8"), tmp_path / "cache")
    stamp = (folder / "model-int8.onnx").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="rag.models.embeddings"):
        assert ensure_onnx(model, tmp_path / "other-cache", int8=True) == folder
    assert not [r for r in caplog.records if "export" in r.getMessage()]
    assert (folder / "model-int8.onnx").stat().st_mtime_ns == stamp

    torch = load_embedder(EmbeddingsConfig(runtime="torch"), tmp_path / "cache")
    texts = ["When did the Harbor Point library abolish fines?", "The mayor is Helen Ward.",
             "Cotton is a soft, fluffy staple fibre that grows in a boll around the seeds of cotton plants. " * 4]
    cosine = (int8.embed(texts) * torch.embed(texts)).sum(axis=1)
    assert cosine.min() > 0.99, cosine
    assert np.array_equal(int8.token_spans(texts[2]), torch.token_spans(texts[2]))


@pytest.mark.slow      # exports the model again (~15-20 s on 2 cores)
def test_an_older_export_format_is_redone_once_fused_and_agrees_with_torch(tmp_path, monkeypatch, caplog):
    import onnx

    from rag.config import EmbeddingsConfig
    from rag.models.embeddings import load_embedder
    from rag.models.onnx_export import ONNX_FORMAT, ensure_onnx, onnx_folder

    model = "shipped:all-MiniLM-L6-v2"
    current = ensure_onnx(model, tmp_path / "cache", int8=True)
    monkeypatch.setenv("RAG_ONNX_CACHE", str(tmp_path / "old-exports"))
    folder = onnx_folder(model, tmp_path / "cache")
    shutil.copytree(current, folder)
    stamp = json.loads((folder / "export.json").read_text())
    (folder / "export.json").write_text(json.dumps({**stamp, "format": ONNX_FORMAT - 1}))
    before = (folder / "model-int8.onnx").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="rag.models.embeddings"):
        int8 = load_embedder(EmbeddingsConfig(runtime="onnx-int8"), tmp_path / "cache")
        load_embedder(EmbeddingsConfig(runtime="onnx-int8"), tmp_path / "cache")       # current now: not again
    assert len([r for r in caplog.records if "one-time ONNX" in r.getMessage()]) == 1
    assert (folder / "model-int8.onnx").stat().st_mtime_ns != before
    assert json.loads((folder / "export.json").read_text())["format"] == ONNX_FORMAT
    # Every layer's attention fused and quantized: the speed-up of format 2 (bench/RESULTS.md).
    ops = [n.op_type for n in onnx.load(str(folder / "model-int8.onnx"), load_external_data=False).graph.node]
    assert ops.count("QAttention") == 6 and "SkipLayerNormalization" in ops, sorted(set(ops))
    assert not (folder / "model-plain.onnx").exists()

    torch = load_embedder(EmbeddingsConfig(runtime="torch"), tmp_path / "cache")
    texts = ["Who was the first librarian?", "Beyoncé Giselle Knowles-Carter is an American singer.",
             "The torch relay ran through 21 countries. " * 12]
    # (a one- or two-token text gets ~0.97 from int8, fused or not: too few tokens to average the error out)
    cosine = (int8.embed(texts) * torch.embed(texts)).sum(axis=1)
    assert cosine.min() > 0.99, cosine


@pytest.mark.slow      # needs the export (shared with the tests above)
def test_a_model_the_optimizer_cannot_fuse_keeps_the_plain_export(tmp_path, monkeypatch, caplog):
    import onnxruntime.transformers.optimizer as optimizer

    from rag.models.onnx_export import _optimize, ensure_onnx

    folder = ensure_onnx("shipped:all-MiniLM-L6-v2", tmp_path / "cache", int8=False)
    shutil.copy(folder / "model.onnx", tmp_path / "model-plain.onnx")

    def fails(*args, **kwargs):
        raise ValueError("unknown architecture")

    monkeypatch.setattr(optimizer, "optimize_model", fails)
    with caplog.at_level(logging.WARNING, logger="rag.models.embeddings"):
        assert _optimize(tmp_path, {"heads": 12, "hidden": 384, "feeds": {}}) == 0
    assert (tmp_path / "model.onnx").read_bytes() == (folder / "model.onnx").read_bytes()
    assert not (tmp_path / "model-plain.onnx").exists() and not (tmp_path / "model-fused.onnx").exists()
    assert "fusion skipped (ValueError: unknown architecture)" in caplog.text
