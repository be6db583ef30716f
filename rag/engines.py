"""Load each engine once, on first use, and hand the same instances to every caller.

The CLI builds what a subcommand needs (`search` never loads the LLM); the page builds everything
at start. Nothing here is a module global: an `Engines` is made by the entry point and passed in.
"""
from __future__ import annotations

import logging
import threading
from functools import cached_property
from pathlib import Path

from common.files import make_private
from rag.config import Config

log = logging.getLogger(__name__)


class Engines:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        make_private(cfg.data_path)       # 0700, and an older, world-readable data dir tightened
        self.cache_dir: Path = cfg.data_path / "cache"
        self._lock = threading.RLock()
        self._voices_lock = threading.Lock()
        self._voices: dict[tuple, object] = {}

    MODELS = {"embedder": "embeddings", "llm": "llm", "synthesizer": "tts", "transcriber": "asr",
              "turn_end": "call"}  # -> config section

    def loaded(self, name: str) -> bool:
        """Whether `name` (an engine property) is already built; asking never loads it."""
        return name in self.__dict__          # where cached_property keeps what it built

    def share_models(self, other: Engines) -> None:
        """Use the models `other` has already loaded instead of loading them again: tests, benchmarks
        and several data dirs in one process pay the slow part once. A model `other` has not loaded,
        or loaded under other settings, is left to load here on first use."""
        for name, section in self.MODELS.items():
            if other.loaded(name) and getattr(self.cfg, section) == getattr(other.cfg, section):
                self.__dict__[name] = other.__dict__[name]

    def _load(self, what: str, factory):
        with self._lock:
            log.info("loading %s", what)
            return factory()

    @cached_property
    def placement(self):
        """Where the chat model, the embedder and Whisper go (rag/models/placement.py): decided once, before
        the first of them loads, and logged as one block so a start-up log shows the whole plan."""
        from rag.models.placement import plan_engines

        def model_gib(llm, cache_dir):     # transformers is imported only when a model may go on a GPU
            from rag.models import llm_hf

            return llm_hf.model_gib(llm, cache_dir)

        plan = self._load("placement plan", lambda: plan_engines(self.cfg, self.cache_dir, model_gib))
        log.info("%s", "\n".join(plan.describe()))
        return plan

    @cached_property
    def placed(self) -> Config:
        """The config with every `auto` device resolved from `placement`; models load from this."""
        from rag.models.placement import apply_plan

        return apply_plan(self.cfg, self.placement)

    @cached_property
    def embedder(self):
        from rag.models.embeddings import load_embedder

        cfg = self.placed.embeddings    # the plan first: it is logged before any model loads
        return self._load("embedder", lambda: load_embedder(cfg, self.cache_dir))

    @cached_property
    def index(self):
        from rag.index.document_index import DocumentIndex

        return self._load("index", lambda: DocumentIndex(self.cfg, self.embedder))

    @cached_property
    def ingestor(self):
        from rag.ingest.ingestor import Ingestor

        return Ingestor(self.index, self.cfg)

    @cached_property
    def retriever(self):
        from rag.retrieve import Retriever

        return Retriever(self.index, self.cfg.retrieval)

    @cached_property
    def llm(self):
        from rag.models.registry import load_chat_model

        cfg = self.placed.llm
        return self._load(f"chat model ({cfg.backend})", lambda: load_chat_model(cfg, self.cache_dir, self.placement))

    @cached_property
    def turn_end(self):
        """Smart Turn v3.2 (call.smart_turn): is the speaker done? Loaded on the first call that uses it."""
        from asr.turn_end import SmartTurn
        from common.shipped import resolve

        return self._load("turn-end model", lambda: SmartTurn(resolve("shipped:smart-turn-v3.2", self.cache_dir)))

    @cached_property
    def synthesizer(self):
        from tts.registry import load_synthesizer

        return self._load(f"speech synthesizer ({self.cfg.tts.backend})", lambda: load_synthesizer(self.cfg.tts, threads=self.cfg.tts.threads))

    @cached_property
    def voices(self):
        """The voice per answer language (tts.voices, issue 16); each loads on first use."""
        from tts.languages import LanguageVoices

        return LanguageVoices(self.cfg.tts, threads=self.cfg.tts.threads)

    def synthesizer_for(self, backend: str | None = None, voice: str | None = None, rate: float | None = None):
        """The synthesizer for one voice choice (engine, voice, rate rounded to 0.05), made once and kept.

        The configured choice is `self.synthesizer` itself; others are loaded like it (same fallback
        wrapping), on first use. BackendError if the chosen engine and its fallback cannot load.
        """
        tts = self.cfg.tts
        backend = backend or tts.backend
        voice = voice or None
        rate = round(round(float(tts.rate if rate is None else rate) / 0.05) * 0.05, 2)
        if (backend, voice, rate) == (tts.backend, tts.voice, round(round(tts.rate / 0.05) * 0.05, 2)):
            return self.synthesizer
        key = (backend, voice, rate)
        with self._voices_lock:     # one load per choice, even when two sessions ask at once
            if key not in self._voices:
                from tts.registry import load_synthesizer

                chosen = tts.model_copy(update={"backend": backend, "voice": voice, "rate": rate})
                self._voices[key] = self._load(f"speech synthesizer ({backend}, {voice or 'default voice'}, "
                                               f"rate {rate:g})",
                                               lambda: load_synthesizer(chosen, threads=tts.threads))
            return self._voices[key]

    @cached_property
    def transcriber(self):
        from asr.registry import load_transcriber

        cfg = self.placed.asr
        return self._load(f"transcriber ({cfg.backend})",
                          lambda: load_transcriber(cfg, self.cache_dir, threads=cfg.threads))

    @cached_property
    def history(self):
        from rag.history import open_history

        return self._load(f"chat history ({self.cfg.history.backend})",
                          lambda: open_history(self.cfg.history, self.cfg.data_path))

    def pipeline(self, speak: bool = False, synthesizer=None):
        """`synthesizer`: the voice to speak with (see `synthesizer_for`); the configured one if None."""
        from rag.pipeline import Pipeline

        speak = speak and self.cfg.tts.enabled
        # The configured voice follows the answer's language (tts.voices); a voice the user picked instead
        # (Settings) speaks every answer.
        by_language = synthesizer is None or (self.loaded("synthesizer") and synthesizer is self.synthesizer)
        if speak and synthesizer is None:
            synthesizer = self.synthesizer
        return Pipeline(self.cfg, self.retriever, self.llm, synthesizer if speak else None, self.sentence_vectors,
                        voices=self.voices if speak and by_language else None)

    @cached_property
    def sentence_vectors(self):
        """The sentence vectors every question's ranking looks up (rag/answer/evidence.py), shared by all
        pipelines: a sentence is embedded once, not once per question that retrieves its passage."""
        from rag.answer.evidence import SentenceVectors

        return SentenceVectors(self.embedder.embed)

    def ensure_documents(self, progress: bool = True, rescan: bool = False):
        """Ingest the configured folder when the index is empty (or always, with `rescan`)."""
        docs = self.cfg.documents
        if not docs.auto_ingest or not docs.folder or not Path(docs.folder).is_dir():
            return None
        if not rescan and not self.index.is_empty():
            return None
        log.info("ingesting %s", docs.folder)
        return self.ingestor.ingest([docs.folder], progress=progress)
