"""The document index: catalog + vector store + BM25, kept in step by generation number.

The catalog (rag/index/catalog.py) is the truth: SQLite under `<data_dir>/index/` (catalog.sqlite,
manifest.json, write.lock) or PostgreSQL shared by replicas (manifest in its meta table, the write
lock an advisory lock). The vector store (vectors.faiss + its generation, or Qdrant) and BM25 are
derived from it. Writers take the catalog's write lock, so two ingests never interleave; readers
notice another process's (or machine's) writes by the catalog generation.
"""
from __future__ import annotations

import fnmatch
import logging
import math
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from rag.answer.abstain import stem_word, terms
from rag.index.catalog import CatalogStore, ChunkRef
from rag.config import Config
from rag.models.embeddings import Embedder
from common.errors import IndexMismatchError, UserInputError
from common.stemming import stem_words
from rag.index.registry import open_catalog, open_vector_store
from rag.index.vectors import VectorStore

log = logging.getLogger(__name__)
logging.getLogger("bm25s").setLevel(logging.WARNING)   # it logs every index build at DEBUG
FORMAT_VERSION = 1


def source_matches(source: str, pattern: str) -> bool:
    """A filter pattern is a glob on the document's source (`manuals/*.pdf`, `*harbor*`), the exact
    source, or a folder prefix (`manuals` matches everything under manuals/)."""
    pattern = pattern.strip().rstrip("/")
    return bool(pattern) and (source == pattern or source.startswith(pattern + "/")
                              or fnmatch.fnmatchcase(source, pattern))


@dataclass(frozen=True)
class Scored:
    chunk_id: int
    score: float


class LexicalIndex:
    """BM25 over chunk texts (bm25s: sparse matrices, fast to build and to query), Snowball-stemmed: on
    squad-train BM25 alone found the answer in its best 5 passages 0.8925 -> 0.9275 of the time."""

    def __init__(self, ids: np.ndarray, texts: list[str]):
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)   # bm25s sets DEBUG on its first import
        self.bm25s = bm25s
        self.ids = ids
        self._texts = texts              # kept until the document frequencies are counted (`idf`)
        self._df: Counter[str] | None = None
        self._df_lock = threading.Lock()
        self.model = None
        if texts:
            self.model = bm25s.BM25()
            self.model.index(bm25s.tokenize(texts, stopwords="en", stemmer=stem_words, show_progress=False),
                             show_progress=False)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[Scored]:
        if self.model is None:
            return []
        tokens = self.bm25s.tokenize([query], stopwords="en", stemmer=stem_words, show_progress=False)
        # The query's words as the index knows them (a word no chunk has matches nothing).
        words = {i: w for w, i in tokens.vocab.items()}
        query_words = [words[i] for i in tokens.ids[0] if words[i] in self.model.vocab_dict] if tokens.ids else []
        if not query_words:
            return []
        mask = None
        if allowed is not None:   # a metadata filter: excluded chunks score 0 and are dropped below
            mask = np.isin(self.ids, allowed).astype(np.float32)
            if not mask.any():
                return []
        rows, scores = self.model.retrieve([query_words], k=min(k, len(self.ids)), show_progress=False, n_threads=1,
                                           weight_mask=mask)
        return [Scored(int(self.ids[r]), float(s)) for r, s in zip(rows[0], scores[0]) if s > 0]

    def idf(self, words: Iterable[str]) -> dict[str, float]:
        """Inverse document frequency over the chunks of stemmed words (rag/answer/abstain.py `terms`: the decline
        rule's tokens, not bm25s's, so the words it matches are the words counted). BM25's form,
        log(1 + (N - df + 0.5) / (df + 0.5)): a word no chunk has gets the largest value."""
        df, n = self._counts(), len(self.ids)
        return {w: math.log(1 + (n - df.get(w, 0) + 0.5) / (df.get(w, 0) + 0.5)) for w in words}

    def _counts(self) -> Counter[str]:
        with self._df_lock:   # counted on first use, once per index generation: ingest does not pay for it
            if self._df is None:
                self._df = Counter(t for text in self._texts for t in terms(text))
                self._texts = []
            return self._df

    def unseen(self, words: Iterable[str]) -> tuple[str, ...]:
        """Of these lower-case words, those no chunk has (by their stem, as `idf` counts them)."""
        words = tuple(words)
        df = self._counts() if words else Counter()
        return tuple(w for w in words if df.get(stem_word(w), 0) == 0)


class DocumentIndex:
    def __init__(self, cfg: Config, embedder: Embedder):
        self.cfg = cfg
        self.embedder = embedder
        self.folder = cfg.data_path / "index"
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._writers = 0   # in-process ingests running: their changes reach memory through apply()
        self.catalog: CatalogStore = open_catalog(cfg, self.folder)
        self._check_manifest()
        self.store: VectorStore = self._open_store()
        self.generation = -1
        self._store_current = False   # False: the vector store may lag the catalog (another writer was busy)
        self.lexical = LexicalIndex(np.zeros(0, dtype=np.int64), [])
        self.refresh()

    # -- manifest ---------------------------------------------------------------------------
    def manifest(self) -> dict:
        return {"format_version": FORMAT_VERSION, "embedding_model": self.embedder.name,
                "dimension": self.embedder.dimension, "chunk_tokens": self.cfg.chunking.chunk_tokens,
                "overlap_tokens": self.cfg.chunking.overlap_tokens}

    def _check_manifest(self) -> None:
        want = self.manifest()
        shared = self.catalog.shared
        where = f"the catalog in PostgreSQL at {self.catalog.where}" if shared else f"the index in {self.folder}"
        other = "or use another catalog database" if shared else "or use another --data-dir"

        def check(have: dict) -> None:
            if (have.get("embedding_model"), have.get("dimension")) != (want["embedding_model"], want["dimension"]):
                raise IndexMismatchError(
                    f"{where} was built with embedding model '{have.get('embedding_model')}' "
                    f"({have.get('dimension')}-d) but the config uses '{want['embedding_model']}' "
                    f"({want['dimension']}-d); rebuild it with: python app.py --data-dir {self.cfg.data_dir} "
                    f"ingest --rebuild PATH ({other})")
            if (have.get("chunk_tokens"), have.get("overlap_tokens")) != (want["chunk_tokens"], want["overlap_tokens"]):
                log.warning("index was chunked with %s/%s tokens, config says %s/%s: changed files get the new "
                            "size; run `ingest --rebuild` to re-chunk everything", have.get("chunk_tokens"),
                            have.get("overlap_tokens"), want["chunk_tokens"], want["overlap_tokens"])

        self.catalog.exchange_manifest(want, check)

    def _open_store(self) -> VectorStore:
        return open_vector_store(self.cfg.vector_store, self.embedder.dimension, self.folder,
                                 catalog_id=self.catalog.catalog_id())

    # -- keeping derived structures in step ---------------------------------------------------
    def refresh(self, locked: bool = False) -> None:
        """Bring the vector store and BM25 up to the catalog's generation (another process may have written).
        `locked`: this process holds the catalog's write lock."""
        generation = self.catalog.generation()
        with self._lock:
            # While this process ingests, the catalog runs ahead of memory by design (apply() follows each
            # commit); rebuilding then would add the same chunk twice.
            if (generation == self.generation and self._store_current) or self._writers:
                return
            self._store_current = self._sync_store(generation, locked)
            if generation != self.generation:
                ids, texts = self.catalog.all_texts()
                self.lexical = LexicalIndex(ids, texts)
                self.generation = generation

    def _sync_store(self, generation: int, locked: bool) -> bool:
        """Rebuild the vector store from the catalog if it is behind; False if that must wait for a writer."""
        if self.store.saved_generation() == generation and not self.store.needs_rebuild():
            if self.generation >= 0 and not self.store.live:   # another process saved this generation's file
                self.store = self._open_store()
            return True
        if not getattr(self.store, "shared", False) or locked:
            self._rebuild_store(generation)
            return True
        # A store the replicas share (a Qdrant server) is rebuilt only under the write lock: a writer on
        # another machine is filling it right now if the lock is taken, and saves its generation when done.
        with self.catalog.try_writer() as got:
            if not got:
                log.info("vector store is behind the catalog while another replica writes; searching it as it is")
                return False
            generation = self.catalog.generation()
            if self.store.saved_generation() != generation or self.store.needs_rebuild():
                self._rebuild_store(generation)
        return True

    def _rebuild_store(self, generation: int) -> None:
        log.info("rebuilding vector index from the catalog (generation %s)", generation)
        ids, vecs = self.catalog.all_vectors(self.embedder.dimension)   # read after the generation: never older
        self.store.rebuild(ids, vecs)
        self.store.save(generation)    # a restart (or another replica, for a shared store) need not rebuild

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the catalog's write lock for an ingest, with memory brought up to date first."""
        with self.catalog.writer():
            self.refresh(locked=True)
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
            self._store_current = True

    # -- search ---------------------------------------------------------------------------------
    def dense(self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[Scored]:
        with self._lock:
            ids, scores = self.store.search(vector, k, allowed)
        return [Scored(int(i), float(s)) for i, s in zip(ids, scores)]

    def lexical_search(self, query: str, k: int, allowed: np.ndarray | None = None) -> list[Scored]:
        with self._lock:
            lexical = self.lexical
        return lexical.search(query, k, allowed)

    def idf(self, words: Iterable[str]) -> dict[str, float]:
        """Inverse document frequency of stemmed words over the indexed chunks (see `LexicalIndex.idf`)."""
        with self._lock:
            lexical = self.lexical
        return lexical.idf(words)

    def unseen(self, words: Iterable[str]) -> tuple[str, ...]:
        """The words no indexed chunk has (see `LexicalIndex.unseen`)."""
        with self._lock:
            lexical = self.lexical
        return lexical.unseen(words)

    def chunks_of_sources(self, patterns: Sequence[str]) -> np.ndarray:
        """Chunk ids of the documents whose source matches any pattern (see `source_matches`).
        No match is an error that lists what there is, rather than an empty answer."""
        docs = [d for d in self.catalog.documents() if any(source_matches(d.source, p) for p in patterns)]
        if not docs:
            known = ", ".join(d.source for d in self.catalog.documents()[:8]) or "none; ingest some first"
            raise UserInputError(f"no document matches {', '.join(repr(p) for p in patterns)} (documents: {known})")
        return np.array(sorted(self.catalog.chunk_ids_for_documents([d.id for d in docs])), dtype=np.int64)

    def refs(self, ids: list[int]) -> dict[int, ChunkRef]:
        return self.catalog.chunk_refs(ids)

    def is_empty(self) -> bool:
        return self.catalog.counts()[1] == 0
