"""llm.requantize: the shipped Q4_1 GGUF converted once by llama.cpp's quantizer to a type with fast CPU
kernels (rag/models/gguf_quantize.py), reused while the source is unchanged, never half-written."""
from __future__ import annotations

import os
import shutil

import pytest

from common.errors import BackendError
from common.shipped import resolve
from rag.config import LLMConfig
from rag.models.gguf_quantize import GGUF_CACHE_ENV, ensure_quantized, quantized_path
from rag.models.llm import GenerationSettings
from rag.models.registry import load_chat_model

pytestmark = pytest.mark.slow     # real model files

MAYOR = [{"role": "system", "content": "Answer from the context only."},
         {"role": "user", "content": "Context: The mayor is Helen Ward.\n\nQuestion: Who is the mayor?"}]


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A private conversion folder (the session-wide one is shared by every other test)."""
    monkeypatch.setenv(GGUF_CACHE_ENV, str(tmp_path / "gguf"))
    return tmp_path


def test_converts_once_and_redoes_it_when_the_source_changes(own_cache):
    source = own_cache / "model.gguf"
    shutil.copy(resolve("shipped:SmolLM2-135M-Instruct-Q4_1", own_cache), source)
    out = ensure_quantized(str(source), "iq4_nl", own_cache)
    assert out == str(quantized_path(str(source), "iq4_nl", own_cache))
    first = os.stat(out).st_mtime_ns
    assert os.path.getsize(out) != os.path.getsize(source)          # really another weight type
    assert ensure_quantized(str(source), "iq4_nl", own_cache) == out
    assert os.stat(out).st_mtime_ns == first                        # reused, not converted again
    os.utime(source, ns=(first + 10**9, first + 10**9))             # the source was replaced
    ensure_quantized(str(source), "iq4_nl", own_cache)
    assert os.stat(out).st_mtime_ns != first
    assert not list((own_cache / "gguf").glob("*.tmp"))


def test_a_broken_source_gives_one_clear_error_and_no_file(own_cache):
    source = own_cache / "broken.gguf"
    with open(resolve("shipped:SmolLM2-135M-Instruct-Q4_1", own_cache), "rb") as f:
        source.write_bytes(f.read(1_000_000))          # a truncated download
    with pytest.raises(BackendError, match="could not convert .*broken.gguf.* llm.requantize: none"):
        ensure_quantized(str(source), "q4_0", own_cache)
    assert not quantized_path(str(source), "q4_0", own_cache).exists()
    assert not list((own_cache / "gguf").glob("*.tmp"))


def test_the_converted_model_answers_from_its_context(tmp_path):
    llm = load_chat_model(LLMConfig(backend="llamacpp", n_ctx=1024, contexts=1, requantize="iq4_nl"), tmp_path)
    assert llm.llm.model_path.endswith(".iq4_nl.gguf")
    answer = llm.complete(MAYOR, GenerationSettings(max_new_tokens=24))
    assert "Helen Ward" in answer
