"""rag/abstain.py: the decline rule's signals and thresholds (pure functions, no models)."""
from __future__ import annotations

import pytest

from rag.abstain import Signals, content_words, coverage, decide
from rag.config import RetrievalConfig

CFG = RetrievalConfig()   # abstain_below 0.30, sentence 0.45, weak sentence 0.60, coverage 0.5


def test_content_words_drop_function_and_question_words():
    assert content_words("What is the name of the river that flows through Paris?") == ["river", "flows", "paris"]
    assert content_words("When was it built?") == ["built"]
    assert content_words("Who is he?") == []


def test_coverage_counts_question_words_found_in_the_passages():
    passages = ["The Seine flows through Paris.", "Bridges were built over it."]
    assert coverage("Which river flows through Paris?", passages) == pytest.approx(2 / 3)
    assert coverage("Which rivers flowed through Paris?", passages) == pytest.approx(2 / 3)   # stems meet
    assert coverage("Who founded Samoa's first bank?", passages) == 0.0
    assert coverage("Who is he?", passages) == 1.0            # nothing to check: no evidence against


def test_coverage_is_case_and_punctuation_blind():
    assert coverage("WHERE did the U.S. Army land?", ["the u s army landed at omaha"]) == 1.0


@pytest.mark.parametrize("signals, declines", [
    (Signals(0.25, 0.90, 1.0), True),      # no passage is close: the passage rule as before
    (Signals(0.50, 0.40, 1.0), True),      # on topic, but no sentence is close to the question
    (Signals(0.50, 0.55, 0.30), True),     # middling sentence and most words missing
    (Signals(0.50, 0.55, 0.60), False),    # middling sentence, words present
    (Signals(0.50, 0.70, 0.00), False),    # a close sentence wins over missing words (misheard names)
    (Signals(0.50, -1.0, 0.00), False),    # support not measured: passage rule only
])
def test_decide(signals, declines):
    reason = decide(signals, CFG)
    assert (reason is not None) is declines
    if reason:
        assert "similarity" in reason      # the log says why


def test_rules_can_be_turned_off():
    off = RetrievalConfig(abstain_below=-1, abstain_sentence_below=-1, abstain_weak_sentence_below=-1)
    assert decide(Signals(0.0, 0.0, 0.0), off) is None


def test_thresholds_are_validated():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        RetrievalConfig(abstain_coverage_below=1.5)
