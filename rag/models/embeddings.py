"""Embedder interface and its backends, chosen by `embeddings.backend` and `embeddings.runtime`.

`runtime: torch` runs the model as sentence-transformers loads it. `onnx` and `onnx-int8` (the default)
run the same model exported once to ONNX, its layers fused and (int8) its weights quantized, by
onnxruntime (rag/models/onnx_export.py); the pooling and normalisation of the sentence-transformers
model are applied in numpy, so the vectors match the torch ones (cosine 1.0 for onnx, ~0.995 for onnx-int8).
"""
from __future__ import annotations

import copy
import json
import logging
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
from tqdm import tqdm

from rag.config import EmbeddingsConfig
from common.errors import BackendError
from common.shipped import is_shipped, resolve
from rag.models.onnx_export import ONNX_CACHE_ENV, ensure_onnx, onnx_folder  # noqa: F401 - re-exported

log = logging.getLogger(__name__)


SEGMENT = 65_536   # characters per piece when a long text is tokenized in parallel


def token_spans(tokenizer, text: str) -> np.ndarray:
    """(start, end) character offsets of the tokens of `text` by a fast Hugging Face tokenizer, without
    special tokens and never truncated: the chunker tokenizes each section once and measures its
    pieces by these. Set the tokenizer's model_max_length high, or it warns about long texts.

    A long text under a tokenizer that splits words at whitespace first (BERT's, as all-MiniLM and
    all-mpnet use) is cut at spaces into pieces tokenized as one batch, in parallel: the same tokens."""
    options = dict(add_special_tokens=False, truncation=False, padding=False, return_offsets_mapping=True,
                   return_attention_mask=False, return_token_type_ids=False)
    cuts = [0]
    if len(text) > 2 * SEGMENT and type(tokenizer.backend_tokenizer.pre_tokenizer).__name__ == "BertPreTokenizer":
        while len(text) - cuts[-1] > 2 * SEGMENT:
            space = text.find(" ", cuts[-1] + SEGMENT, cuts[-1] + 2 * SEGMENT)
            if space < 0:
                break
            cuts.append(space)
    if len(cuts) == 1:
        enc = tokenizer(text, return_tensors="np", **options)
        return np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    cuts.append(len(text))
    enc = tokenizer([text[a:b] for a, b in zip(cuts, cuts[1:])], **options)
    return np.concatenate([np.asarray(spans, dtype=np.int64).reshape(-1, 2) + start
                           for spans, start in zip(enc["offset_mapping"], cuts)])


class Embedder(ABC):
    """Turns texts into L2-normalised float32 vectors (so inner product = cosine)."""

    name: str
    dimension: int
    max_tokens: int

    @abstractmethod
    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` (the chunker's measure), from a tokenizer of its own: see `_share_safely`."""
        with self._count_lock:
            return len(self._counter.encode(text, add_special_tokens=False))

    def token_spans(self, text: str) -> np.ndarray:
        """(start, end) character offsets of the tokens of `text` (the chunker's measure)."""
        with self._count_lock:
            return token_spans(self._counter, text)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def _share_safely(self, tokenizer) -> None:
        """Make the embedder safe to share between threads (an ingest counts tokens and embeds while
        questions are embedded). A Hugging Face tokenizer keeps truncation and padding as state that
        each call sets (counting turns them off, embedding on): two threads on one tokenizer got
        batches without padding ("Unable to create tensor", ValueError) or "Already borrowed". So
        counting gets a copy of its own, and each use of `tokenizer` for embedding holds
        `_encode_lock`, one batch at a time (a question waits for at most one ingest batch)."""
        self._counter = copy.deepcopy(tokenizer)
        self._counter.model_max_length = 1 << 30    # counts whole sections: no "longer than 512" warning
        self._count_lock = threading.Lock()
        self._encode_lock = threading.Lock()


class SentenceTransformerEmbedder(Embedder):
    def __init__(self, cfg: EmbeddingsConfig, cache_dir: Path):
        if is_shipped(cfg.model):   # a shipped model is local: never let the hub client phone home
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer   # heavy import: only when used

        path = resolve(cfg.model, cache_dir)
        try:
            self.model = SentenceTransformer(path, device=cfg.device)
        except Exception as err:  # noqa: BLE001 - any load failure is a backend problem for the user
            raise BackendError(f"could not load embedding model '{cfg.model}' ({path}): "
                               f"{type(err).__name__}: {str(err)[:200]}") from err
        self.name = cfg.model
        self.batch_size = cfg.batch_size
        self.dimension = int(self.model.get_embedding_dimension())
        self.max_tokens = int(self.model.max_seq_length)
        self.tokenizer = self.model.tokenizer
        self._share_safely(self.tokenizer)

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        # Longest first, as sentence-transformers does, so each batch pads to similar lengths; one
        # batch per turn of the lock, so a question is not held up by a whole document's embedding.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in tqdm(range(0, len(order), self.batch_size), desc="embed", disable=not progress, leave=False):
            rows = order[start:start + self.batch_size]
            with self._encode_lock:
                out[rows] = self.model.encode([texts[i] for i in rows], batch_size=self.batch_size,
                                              normalize_embeddings=True, show_progress_bar=False,
                                              convert_to_numpy=True)
        return out


class OnnxEmbedder(Embedder):
    """The sentence-transformers model exported to ONNX, run by onnxruntime (runtime onnx / onnx-int8)."""

    def __init__(self, cfg: EmbeddingsConfig, cache_dir: Path):
        if is_shipped(cfg.model):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackendError("embeddings.runtime onnx needs onnxruntime; run: pip install onnxruntime "
                               "(or use embeddings.runtime torch)") from err
        int8 = cfg.runtime == "onnx-int8"
        try:
            import onnx  # noqa: F401 - needed to export and quantize (once), not to run
        except ImportError:
            if not (onnx_folder(cfg.model, cache_dir) / ("model-int8.onnx" if int8 else "model.onnx")).exists():
                raise BackendError("embeddings.runtime onnx needs the onnx package for the one-time export; "
                                   "run: pip install onnx (or use embeddings.runtime torch)") from None
        folder = ensure_onnx(cfg.model, cache_dir, int8)
        meta = json.loads((folder / "onnx.json").read_text())
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        # count_tokens measures whole documents for the chunker; only embedding truncates (max_length below).
        self.tokenizer.model_max_length = 1 << 30
        self._share_safely(self.tokenizer)
        options = ort.SessionOptions()
        # Do not spin idle worker threads: the LLM runs on the same cores right after a query is embedded.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if cfg.device.startswith("cuda"):
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            else:
                log.warning("embeddings.device %s: onnxruntime has no CUDA provider here; running on CPU", cfg.device)
        self.session = ort.InferenceSession(str(folder / ("model-int8.onnx" if int8 else "model.onnx")),
                                            options, providers=providers)
        self.inputs = list(meta["inputs"])
        self.pooling = meta["pooling"]
        self.name = cfg.model
        self.runtime = cfg.runtime
        self.batch_size = cfg.batch_size
        self.dimension = int(meta["dimension"])
        self.max_tokens = int(meta["max_seq_length"])

    def _run(self, batch: list[str]) -> np.ndarray:
        with self._encode_lock:        # the tokenizer, not the session: onnxruntime runs calls in parallel
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_tokens,
                                 return_tensors="np")
        feeds = {n: np.asarray(enc[n], dtype=np.int64) for n in self.inputs}
        hidden = self.session.run(["last_hidden_state"], feeds)[0]
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        if self.pooling == "cls":
            vecs = hidden[:, 0]
        elif self.pooling == "max":
            vecs = np.where(mask > 0, hidden, -1e9).max(axis=1)
        else:
            vecs = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        # Longest first, as sentence-transformers does, so each batch pads to similar lengths.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in tqdm(range(0, len(order), self.batch_size), desc="embed", disable=not progress, leave=False):
            rows = order[start:start + self.batch_size]
            out[rows] = self._run([texts[i] for i in rows])
        return out


BACKENDS = {"sentence-transformers": SentenceTransformerEmbedder}


def load_embedder(cfg: EmbeddingsConfig, cache_dir: Path) -> Embedder:
    if cfg.runtime != "torch":
        return OnnxEmbedder(cfg, cache_dir)
    return BACKENDS[cfg.backend](cfg, cache_dir)
