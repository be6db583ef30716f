"""Typed events the pipeline yields; the CLI, the page, the benchmarks and the tests consume them.

Like pipecat's frames: small immutable records, one per thing that happened, in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk."""

    chunk_id: str
    text: str
    source: str            # path relative to the ingested folder, or the URL
    location: str = ""     # "page 3", a heading, or ""
    score: float = 0.0     # fused score (higher is better)
    dense_score: float = 0.0  # cosine similarity of the chunk to the question

    def as_json(self) -> dict[str, Any]:
        return {"text": self.text, "source": self.source, "location": self.location,
                "score": round(self.score, 6), "chunk_id": self.chunk_id}


@dataclass(frozen=True)
class Queued:
    """The request waits for a busy model; `position` 1 means next."""

    position: int


@dataclass(frozen=True)
class Transcribed:
    """A spoken question became text."""

    text: str
    language: str
    duration_s: float
    language_probability: float = 0.0


@dataclass(frozen=True)
class Retrieved:
    question: str
    standalone_question: str
    hits: tuple[Hit, ...]
    language: str | None = None   # the question's language (heard or detected); None: not known


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class SentenceReady:
    """A complete, speakable sentence of the answer (markdown and [n] markers removed)."""

    text: str


@dataclass(frozen=True)
class AudioChunk:
    """Speech for one sentence: mono float32 samples in [-1, 1]."""

    samples: Any           # numpy.ndarray; Any keeps numpy out of this module's imports
    sample_rate: int
    text: str


@dataclass(frozen=True)
class Done:
    answer: str
    standalone_question: str
    sources: tuple[Hit, ...]
    timings: dict[str, float] = field(default_factory=dict)
    abstained: bool = False
    language: str = "en"   # what the answer is written (and spoken) in


@dataclass(frozen=True)
class Notice:
    """Something went wrong that does not stop the answer (e.g. speech failed, text goes on)."""

    message: str


@dataclass(frozen=True)
class Failed:
    """The request failed; `message` is one plain line for the user."""

    message: str
    error: BaseException | None = None


Event = Queued | Transcribed | Retrieved | TextDelta | SentenceReady | AudioChunk | Done | Notice | Failed


Terminal = Done | Failed


@dataclass
class Outcome:
    """What one `Pipeline.ask` came to: its terminal event, and the speech and notices on the way."""

    done: Done | None = None
    failed: Failed | None = None
    audio: list[AudioChunk] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    @property
    def terminal(self) -> Terminal | None:
        return self.done or self.failed


def fold(events, on_event=None) -> Outcome:
    """Run an event stream to its end and collect it; `on_event(event)` sees each event first (to stream
    text, say). The one loop the CLI, the benchmarks and the tests share instead of each its own chain."""
    outcome = Outcome()
    for event in events:
        if on_event is not None:
            on_event(event)
        if isinstance(event, Done):
            outcome.done = event
        elif isinstance(event, Failed):
            outcome.failed = event
        elif isinstance(event, AudioChunk):
            outcome.audio.append(event)
        elif isinstance(event, Notice):
            outcome.notices.append(event.message)
    return outcome
