"""The voice and rate chosen in Settings: one synthesizer per choice, kept; the rate really changes the pace."""
from __future__ import annotations

import pytest

from tests.conftest import make_config

pytestmark = pytest.mark.slow     # real models (the unit run leaves them out)

SENTENCE = "The library opens at nine in the morning and closes at six in the evening."


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    from rag.engines import Engines

    return Engines(make_config(tmp_path_factory.mktemp("tts-choice")))


def test_the_configured_choice_is_the_configured_synthesizer(engines):
    cfg = engines.cfg.tts
    assert engines.synthesizer_for(None, None, cfg.rate) is engines.synthesizer
    assert engines.synthesizer_for(cfg.backend, cfg.voice, cfg.rate + 0.01) is engines.synthesizer  # rounded


@pytest.mark.parametrize("backend, voice", [("hibari", None), ("espeak-ng", "en-gb")])
def test_one_synthesizer_per_choice_and_rate_sets_the_pace(engines, backend, voice):
    slow = engines.synthesizer_for(backend, voice, 0.75)
    assert engines.synthesizer_for(backend, voice, 0.75) is slow
    assert engines.synthesizer_for(backend, voice, 0.76) is slow            # rounded to 0.05
    fast = engines.synthesizer_for(backend, voice, 1.5)
    assert fast is not slow
    assert backend in fast.name and "fallback" not in fast.name
    slow_s = len(slow.synthesize(SENTENCE)) / slow.sample_rate
    fast_s = len(fast.synthesize(SENTENCE)) / fast.sample_rate
    assert fast_s < 0.7 * slow_s, (backend, slow_s, fast_s)


def test_settings_offers_the_voices_that_load_and_handlers_use_them(engines):
    from web.chat import ChatHandlers, voice_choices

    choices = dict((value, label) for label, value in voice_choices(engines))
    assert list(choices)[0] == "hibari|"                                    # the configured voice first
    assert choices["hibari|"] == "Natural (hibari)"
    assert choices["espeak-ng|en-us"] == "Robot (espeak-ng, en-us)" and "espeak-ng|en-gb" in choices
    chat = ChatHandlers(engines)
    assert chat.synthesizer("hibari|", engines.cfg.tts.rate) is engines.synthesizer
    gb = chat.synthesizer("espeak-ng|en-gb", 1.25)
    assert gb is engines.synthesizer_for("espeak-ng", "en-gb", 1.25) and gb.voice == "en-gb"
