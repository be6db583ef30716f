"""The filters between the model and the user, in the order the text passes them.

1. rag/answer/repetition.py: a sentence written again, or a piece looping inside one, stops generation;
2. rag/answer/labels.py: a source's label copied from the prompt ("(manual.md, Safety)") is dropped;
3. rag/answer/grounding.py: a sentence that talks about the prompt instead of the sources is dropped;
4. rag/answer/citations.py: a citation marker of a source that does not exist is dropped.
Each holds text back only while it cannot yet tell, so the answer streams, and what one drops is never
shown or spoken.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from rag.answer.citations import CitationFilter
from rag.answer.grounding import GroundingFilter
from rag.answer.labels import LabelFilter
from rag.answer.repetition import RepetitionGuard

log = logging.getLogger(__name__)


class AnswerFilters:
    def __init__(self, source_texts: Sequence[str], n_sources: int, names: Sequence[str] = (),
                 instructions: str = "", question: str = ""):
        """`source_texts`: the passages (and any other text an answer may draw words from); `names`: the
        sources' names and locations, as the prompt labels them; `instructions`: the system prompt;
        `question`: as asked (rag/answer/grounding.py says what these two are for)."""
        self.guard = RepetitionGuard()
        self.labels = LabelFilter(names)
        self.grounding = GroundingFilter(source_texts, names, instructions, question)
        self.citations = CitationFilter(n_sources)

    @property
    def stopped(self) -> bool:
        """The model began repeating itself: stop generating."""
        return self.guard.stopped

    def feed(self, raw: str) -> str:
        return self.citations.feed(self.grounding.feed(self.labels.feed(self.guard.feed(raw))))

    def flush(self) -> str:
        """What is left to show at the end of the stream."""
        labelled = self.labels.feed(self.guard.flush()) + self.labels.flush()
        grounded = self.grounding.feed(labelled) + self.grounding.flush()
        return self.citations.feed(grounded) + self.citations.flush()

    @property
    def dropped(self) -> list[str]:
        """What the model wrote that was not shown: its labels and its sentences about the prompt."""
        return self.labels.dropped + self.grounding.dropped

    def log(self) -> None:
        if self.guard.stopped:
            log.info("generation stopped: the model began repeating itself")
        if self.labels.dropped:
            log.info("dropped %d copied source label(s): %s", len(self.labels.dropped), " | ".join(self.labels.dropped)[:300])
        if self.grounding.dropped:
            log.info("dropped %d sentence(s) not drawn from the sources: %s", len(self.grounding.dropped),
                     " | ".join(self.grounding.dropped)[:300])
        if self.citations.dropped:
            log.info("dropped citation(s) of no source: %s", " ".join(self.citations.dropped))
