"""The document index: SQLite catalog + vector store + BM25, kept in step by generation number.

Layout under `<data_dir>/index/`: catalog.sqlite (truth), vectors.faiss (+ its generation),
manifest.json (embedding model, dimension, chunking). Writers take a file lock, so two ingests
never interleave; readers notice another process's writes by the catalog generation.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock

from rag.catalog import Catalog, ChunkRef
from rag.config import Config
from rag.embeddings import Embedder
from rag.errors import IndexMismatchError
from rag.store import VectorStore, _atomic_write, open_vector_store

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)   # it logs every index build at DEBUG
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Scored:
    chunk_id: int
    score: float


class LexicalIndex:
    """BM25 over chunk texts (bm25s: sparse matrices, fast to build and to query)."""

    def __init__(self, ids: np.ndarray, texts: list[str]):
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)   # bm25s sets DEBUG on its first import
        self.bm25s = bm25s
        self.ids = ids
        self.model = None
        if texts:
            self.model = bm25s.BM25()
            self.model.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)

    def search(self, query: str, k: int) -> list[Scored]:
        if self.model is None:
            return []
        tokens = self.bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.ids or not len(tokens.ids[0]):
            return []
        rows, scores = self.model.retrieve(tokens, k=min(k, len(self.ids)), show_progress=False, n_threads=1)
        return [Scored(int(self.ids[r]), float(s)) for r, s in zip(rows[0], scores[0]) if s > 0]


class DocumentIndex:
    def __init__(self, cfg: Config, embedder: Embedder):
        self.cfg = cfg
        self.embedder = embedder
        self.folder = cfg.data_path / "index"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.write_lock = FileLock(str(self.folder / "write.lock"))
        self._lock = threading.RLock()
        self._writers = 0   # in-process ingests running: their changes reach memory through apply()
        self._check_manifest()
        self.catalog = Catalog(self.folder / "catalog.sqlite")
        self.store: VectorStore = open_vector_store(cfg.vector_store, embedder.dimension, self.folder)
        self.generation = -1
        self.lexical = LexicalIndex(np.zeros(0, dtype=np.int64), [])
        self.refresh()

    # -- manifest ---------------------------------------------------------------------------
    def manifest(self) -> dict:
        return {"format_version": FORMAT_VERSION, "embedding_model": self.embedder.name,
                "dimension": self.embedder.dimension, "chunk_tokens": self.cfg.chunking.chunk_tokens,
                "overlap_tokens": self.cfg.chunking.overlap_tokens}

    def _check_manifest(self) -> None:
        path = self.folder / "manifest.json"
        want = self.manifest()
        if path.exists():
            try:
                have = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                have = {}
            if (have.get("embedding_model"), have.get("dimension")) != (want["embedding_model"], want["dimension"]):
                raise IndexMismatchError(
                    f"the index in {self.folder} was built with embedding model '{have.get('embedding_model')}' "
                    f"({have.get('dimension')}-d) but the config uses '{want['embedding_model']}' "
                    f"({want['dimension']}-d); rebuild it with: python app.py --data-dir {self.cfg.data_dir} "
                    "ingest --rebuild PATH (or use another --data-dir)")
            if (have.get("chunk_tokens"), have.get("overlap_tokens")) != (want["chunk_tokens"], want["overlap_tokens"]):
                log.warning("index was chunked with %s/%s tokens, config says %s/%s: changed files get the new "
                            "size; run `ingest --rebuild` to re-chunk everything", have.get("chunk_tokens"),
                            have.get("overlap_tokens"), want["chunk_tokens"], want["overlap_tokens"])
        _atomic_write(path, json.dumps(want, indent=2).encode())

    # -- keeping derived structures in step ---------------------------------------------------
    def refresh(self) -> None:
        """Bring the vector store and BM25 up to the catalog's generation (another process may have written)."""
        generation = self.catalog.generation()
        with self._lock:
            # While this process ingests, the catalog runs ahead of memory by design (apply() follows each
            # commit); rebuilding then would add the same chunk twice.
            if generation == self.generation or self._writers:
                return
            if self.store.saved_generation() != generation or self.store.needs_rebuild():
                log.info("rebuilding vector index from the catalog (generation %s)", generation)
                ids, vecs = self.catalog.all_vectors(self.embedder.dimension)
                self.store.rebuild(ids, vecs)
            elif self.generation >= 0 and not self.store.live:
                self.store = open_vector_store(self.cfg.vector_store, self.embedder.dimension, self.folder)
            ids, texts = self.catalog.all_texts()
            self.lexical = LexicalIndex(ids, texts)
            self.generation = generation

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the cross-process write lock for an ingest, with memory brought up to date first."""
        with self.write_lock:
            self.refresh()
            with self._lock:
                self._writers += 1
            try:
                yield
            finally:
                with self._lock:
                    self._writers -= 1

    def apply(self, added: list[int], vectors: np.ndarray, orphans: list[int]) -> None:
        """Mirror one committed catalog change in memory (vectors in `added` order)."""
        with self._lock:
            self.store.remove(np.array(orphans, dtype=np.int64))
            self.store.add(np.array(added, dtype=np.int64), vectors)

    def commit(self) -> None:
        """After a batch: persist the vector store and rebuild BM25 at the new generation."""
        generation = self.catalog.generation()
        with self._lock:
            if self.store.needs_rebuild():
                ids, vecs = self.catalog.all_vectors(self.embedder.dimension)
                self.store.rebuild(ids, vecs)
            self.store.save(generation)
            ids, texts = self.catalog.all_texts()
            self.lexical = LexicalIndex(ids, texts)
            self.generation = generation

    # -- search ---------------------------------------------------------------------------------
    def dense(self, vector: np.ndarray, k: int) -> list[Scored]:
        with self._lock:
            ids, scores = self.store.search(vector, k)
        return [Scored(int(i), float(s)) for i, s in zip(ids, scores)]

    def lexical_search(self, query: str, k: int) -> list[Scored]:
        with self._lock:
            lexical = self.lexical
        return lexical.search(query, k)

    def refs(self, ids: list[int]) -> dict[int, ChunkRef]:
        return self.catalog.chunk_refs(ids)

    def is_empty(self) -> bool:
        return self.catalog.counts()[1] == 0
