"""Real speech for the speech tests, made on the spot with the offline voices (no recordings in git).

espeak-ng is robotic (Whisper gets ~11 % of its words wrong), hibari is close to natural (~2 %), so
accuracy bounds in the tests depend on which one made the audio.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from common.wav import write_wav


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} is not installed; run `apt-get install espeak-ng sox ffmpeg`")
    return path


def espeak_wav(text: str, path: Path, rate: int | None = 16000, words_per_minute: int = 160) -> Path:
    """espeak-ng speech as a WAV file; resampled with sox to `rate` (None keeps espeak's 22.05 kHz).

    espeak-ng's own file output has a correct header; the bogus 0x7fffffff sizes appear only with
    --stdout, which `espeak_stdout_bytes` returns for the tests of that case.
    """
    path = Path(path)
    raw = path.with_suffix(".espeak.wav") if rate else path
    subprocess.run([need("espeak-ng"), "-v", "en-us", "-s", str(words_per_minute), "-w", str(raw), text],
                   check=True, capture_output=True)
    if rate:
        sox(raw, path, rate)
        raw.unlink()
    return path


def espeak_stdout_bytes(text: str) -> bytes:
    return subprocess.run([need("espeak-ng"), "-v", "en-us", "--stdout", text], check=True,
                          capture_output=True).stdout


def sox(src: Path, dst: Path, rate: int, channels: int = 1) -> Path:
    subprocess.run([need("sox"), str(src), "-r", str(rate), "-c", str(channels), str(dst)], check=True,
                   capture_output=True)
    return Path(dst)


def ffmpeg(src: Path, dst: Path, *args: str) -> Path:
    """Convert with ffmpeg; the codec follows from dst's extension unless `args` name one."""
    subprocess.run([need("ffmpeg"), "-nostdin", "-loglevel", "error", "-y", "-i", str(src), *args, str(dst)],
                   check=True, capture_output=True)
    return Path(dst)


def ffmpeg_pipe(src: Path, fmt: str, *args: str) -> bytes:
    """Encode to stdout, as a browser's MediaRecorder streams: such webm declares no duration."""
    return subprocess.run([need("ffmpeg"), "-nostdin", "-loglevel", "error", "-i", str(src), *args, "-f", fmt,
                           "pipe:1"], check=True, capture_output=True).stdout


def hibari_wav(text: str, path: Path, engine=None, seed: int = 0) -> Path:
    """hibari-tts speech (24 kHz) as a WAV file; pass a loaded `hibari.Hibari` to avoid reloading."""
    if engine is None:
        from hibari import Hibari
        engine = Hibari()
    from hibari import SAMPLE_RATE
    return write_wav(path, engine(text, seed=seed), SAMPLE_RATE)


def silence_wav(path: Path, seconds: float, rate: int = 16000, noise: float = 0.0, seed: int = 0) -> Path:
    samples = np.zeros(int(seconds * rate), np.float32)
    if noise:
        samples = np.random.default_rng(seed).normal(0.0, noise, samples.size).astype(np.float32)
    return write_wav(path, samples, rate)


def words(text: str) -> list[str]:
    text = text.lower().replace("-", " ")
    return re.findall(r"[a-z0-9']+", text)


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: (substitutions + deletions + insertions) / reference words, by edit distance."""
    ref, hyp = words(reference), words(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / max(1, len(ref))
