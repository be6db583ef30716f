"""The filters between the model and the user, in the order the text passes them.

1. rag/answer/repetition.py: a sentence written again, or a piece looping inside one, stops generation;
2. rag/answer/grounding.py: a sentence that talks about the prompt instead of the sources is dropped;
3. rag/answer/citations.py: a citation marker of a source that does not exist is dropped.
Each holds text back only while it cannot yet tell, so the answer streams, and what one drops is never
shown or spoken.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from rag.answer.citations import CitationFilter
from rag.answer.grounding import GroundingFilter
from rag.answer.repetition import RepetitionGuard

log = logging.getLogger(__name__)


class AnswerFilters:
    def __init__(self, source_texts: Sequence[str], n_sources: int):
        self.guard = RepetitionGuard()
        self.grounding = GroundingFilter(source_texts)
        self.citations = CitationFilter(n_sources)

    @property
    def stopped(self) -> bool:
        """The model began repeating itself: stop generating."""
        return self.guard.stopped

    def feed(self, raw: str) -> str:
        return self.citations.feed(self.grounding.feed(self.guard.feed(raw)))

    def flush(self) -> str:
        """What is left to show at the end of the stream."""
        return self.citations.feed(self.grounding.feed(self.guard.flush()) + self.grounding.flush()) + self.citations.flush()

    @property
    def grounding_dropped(self) -> list[str]:
        return self.grounding.dropped

    def log(self) -> None:
        if self.guard.stopped:
            log.info("generation stopped: the model began repeating itself")
        if self.grounding.dropped:
            log.info("dropped %d sentence(s) not drawn from the sources: %s", len(self.grounding.dropped),
                     " | ".join(self.grounding.dropped)[:300])
        if self.citations.dropped:
            log.info("dropped citation(s) of no source: %s", " ".join(self.citations.dropped))
