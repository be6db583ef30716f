"""Speech while the answer is being written: a sentence aggregator in front of a synthesis thread.

The pipeline (rag/pipeline.py) feeds it the answer's text deltas; each finished sentence (the first may
end at a clause: tts.first_clause_chars) is synthesized on a worker thread while the model writes the
next, and the audio comes back, in order, as events.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator

from common.errors import one_line
from rag.events import AudioChunk, Event, Notice, SentenceReady

log = logging.getLogger(__name__)


class Speaker:
    """Sentence aggregator in front of a synthesis worker thread, so the first sentence is being
    spoken while the model writes the next. Events come back in order through a queue."""

    def __init__(self, synthesizer, mark, max_chars: int = 300, first_clause: int = 0):
        from common.sentences import SentenceSplitter, speakable

        self.synth = synthesizer
        self.mark = mark
        self.speakable = speakable
        self.splitter = SentenceSplitter(max_chars=max_chars, first_clause=first_clause)
        self.todo: queue.Queue[str | None] = queue.Queue()
        self.done: queue.Queue[Event | BaseException | None] = queue.Queue()
        self.thread = threading.Thread(target=self._work, name="tts-worker", daemon=True)
        self.thread.start()
        self.failed = False

    def _work(self) -> None:
        while (sentence := self.todo.get()) is not None:
            try:
                samples = self.synth.synthesize(sentence)
                if len(samples):
                    self.mark("first_audio_s")
                    self.done.put(AudioChunk(samples, self.synth.sample_rate, sentence))
            except Exception as err:  # noqa: BLE001 - reported to the consumer, speech stops, text goes on
                self.done.put(err)
                return
        self.done.put(None)

    def feed(self, delta: str, final: bool = False) -> None:
        sentences = self.splitter.feed(delta) + (self.splitter.flush() if final else [])
        for sentence in sentences:
            spoken = self.speakable(sentence)
            if spoken:
                self.mark("first_sentence_s")
                self.done.put(SentenceReady(spoken))
                self.todo.put(spoken)
        if final:
            self.todo.put(None)

    def _take(self, block: bool) -> Iterator[Event]:
        while True:
            try:
                item = self.done.get(block=block, timeout=120 if block else None)
            except queue.Empty:
                return
            if item is None:
                return
            if isinstance(item, BaseException):
                if not self.failed:
                    self.failed = True
                    log.warning("speech synthesis failed: %s", one_line(item))
                    yield Notice(f"speech stopped: {one_line(item)}")
                if block:
                    return
                continue
            yield item

    def ready(self) -> Iterator[Event]:
        yield from self._take(block=False)

    def drain(self) -> Iterator[Event]:
        yield from self._take(block=True)

    def close(self) -> None:
        self.todo.put(None)
