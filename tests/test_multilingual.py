"""Issue 16 end to end, with real models: a question spoken by espeak-ng in German, Spanish, French and
English about English documents is heard in its language (detection limited to asr.languages), its
transcript is close, the answer to it is written in that language (stopword count) and spoken with a voice
of that language (the answer's audio, run back through Whisper, is detected as that language).

The profile is profiles/multilingual.yaml (Whisper base), with the Qwen2.5 0.5B GGUF in place of its
1.5B (`shipped:Qwen2.5-Coder-0.5B-Instruct-Q4_K_M`, the one CI installs); `RAG_TEST_MULTILINGUAL_LLM`
(a shipped: name or a .gguf path) points the LLM elsewhere. Models load once for the module; slow (conftest: base_engines).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SQUAD

pytestmark = pytest.mark.slow     # Whisper base and a 0.5B LLM: about a minute
PROFILE = ROOT / "profiles" / "multilingual.yaml"
LANGS = ("en", "de", "es", "fr")
# (language, espeak-ng voice, words per minute, the question, its document): hand-translated squad-train
# questions (../shared/eval/multilingual). Robotic speech is hard on Whisper base, French most
# (../shared/MODELS.md); these are ones it hears well enough at a calm pace.
CASES = [
    ("de", "de", 130, "Welches Gesundheitsproblem wird in Namibia durch die AIDS-Epidemie verschärft?", "Namibia.txt"),
    ("es", "es", 130, "¿Qué grupo afirma ser el mayor propietario privado de tierras de Alaska?", "Alaska.txt"),
    ("fr", "fr-fr", 130, "Lequel des deux systèmes, la récompense ou la punition, est le mieux compris ?", "Brain.txt"),
    ("en", "en-us", 160, "Which group claims it is Alaska's largest private land owner?", "Alaska.txt"),
]


FOUND: dict[str, bool] = {}   # language -> its document was among the passages the model answered from


@pytest.fixture(scope="module")
def ml(base_engines, tmp_path_factory):
    from rag.config import load_config
    from rag.engines import Engines

    # The 0.5B, not the profile's 1.5B: setup.sh --test installs only the 0.5B's parts (CI downloads 490 MB
    # instead of 1.6 GB); the whole path (detection, translation, answer language, voice) is the same.
    llm = os.environ.get("RAG_TEST_MULTILINGUAL_LLM") or "shipped:Qwen2.5-Coder-0.5B-Instruct-Q4_K_M"
    docs = tmp_path_factory.mktemp("ml-docs")
    for name in {case[-1] for case in CASES}:
        shutil.copy2(SQUAD / "docs" / name, docs / name)
    cfg = load_config(PROFILE, ["documents.folder=null", f"llm.model={llm}"], str(tmp_path_factory.mktemp("ml-data")))
    engines = Engines(cfg)
    engines.share_models(base_engines)          # the same embedder: loaded once
    report = engines.ingestor.ingest([str(docs)], progress=False)
    assert report.added == len({case[-1] for case in CASES}) and not report.errors
    return engines


def espeak(voice: str, wpm: int, text: str) -> bytes:
    return subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "--stdout", text], check=True,
                          capture_output=True).stdout


def recovered(reference: str, heard: str) -> float:
    """Share of the reference's longer words (5+ letters) that the transcript has, by their first 4 letters
    (Whisper on espeak-ng bends endings and accents, the stems survive)."""
    def stems(text):
        return {w[:4] for w in re.findall(r"[^\W\d_]+", text.lower()) if len(w) >= 5}
    ref = stems(reference)
    return len(ref & stems(heard)) / len(ref) if ref else 1.0


def test_the_profile_documents_are_english(ml):
    assert ml.index.catalog.languages() == {"en": len({case[-1] for case in CASES})}


@pytest.mark.parametrize("code,voice,wpm,question,source", CASES, ids=[c[0] for c in CASES])
def test_a_spoken_question_is_heard_answered_and_spoken_in_its_language(ml, code, voice, wpm, question, source):
    from common.language import detect
    from common.wav import resample
    from rag.events import fold
    from rag.pipeline import AskOptions

    heard = ml.transcriber.transcribe(espeak(voice, wpm, question))
    assert heard.language == code, (heard, question)
    assert 0 < heard.language_probability <= 1
    assert recovered(question, heard.text) >= 0.4, (question, heard.text)

    # The answer is asked with the words as written and the language as heard: Whisper base garbles
    # espeak-ng's names ("Alaska" -> "a Lascazar", even in English), which no retrieval survives; the
    # transcript's closeness is checked above, spoken questions end to end in bench/RESULTS.md.
    outcome = fold(ml.pipeline(speak=True).ask(question, [], AskOptions(voice=True, speak=True,
                                                                        language=heard.language)))
    done = outcome.done
    assert done is not None, outcome.failed
    assert done.language == code, done
    FOUND[code] = any(h.source == source for h in done.sources)
    from bench.multilingual import answer_words

    words = answer_words(done.answer)
    assert detect(words, LANGS, min_hits=1) == code, done.answer

    expected_voice = "espeak-ng" if code != "en" else ml.cfg.tts.backend
    assert ml.voices.describe(code).startswith(expected_voice)
    rate = outcome.audio[0].sample_rate
    speech = np.concatenate([a.samples for a in outcome.audio])
    back = ml.transcriber.transcribe(resample(speech, rate, 16000).astype(np.float32))
    assert back.language == code, (back, done.answer)


def test_most_spoken_questions_reach_their_document(ml):
    """A garbled transcript (espeak-ng German is the hardest for Whisper base) may be declined, in the
    asker's language, as the test above checks (and the 0.5B model declines some answerable questions:
    bench multilingual measures that); most must still bring their document to the model."""
    assert len(FOUND) == len(CASES) and sum(FOUND.values()) >= len(CASES) - 1, FOUND
