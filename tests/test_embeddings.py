"""The default embedder runtime, onnx-int8: exported once and reused, and its vectors those of torch."""
from __future__ import annotations

import logging
import os
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
