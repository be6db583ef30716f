"""Embedder interface and its backends, chosen by `embeddings.backend`."""
from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from rag.config import EmbeddingsConfig
from rag.errors import BackendError
from rag.shipped import is_shipped, resolve

log = logging.getLogger(__name__)


class Embedder(ABC):
    """Turns texts into L2-normalised float32 vectors (so inner product = cosine)."""

    name: str
    dimension: int
    max_tokens: int

    @abstractmethod
    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray: ...

    @abstractmethod
    def count_tokens(self, text: str) -> int: ...

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


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

    def embed(self, texts: list[str], progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vecs = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 show_progress_bar=progress, convert_to_numpy=True)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))


BACKENDS = {"sentence-transformers": SentenceTransformerEmbedder}


def load_embedder(cfg: EmbeddingsConfig, cache_dir: Path) -> Embedder:
    return BACKENDS[cfg.backend](cfg, cache_dir)
