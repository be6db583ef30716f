"""Small WAV and sample helpers shared by the synthesizers, the web page and the tests.

Only the standard library's `wave` and numpy: reading goes through a tolerant parser because
espeak-ng (writing to a pipe) puts 0x7fffffff in the RIFF and data sizes.
"""
from __future__ import annotations

import io
import struct
import wave
from pathlib import Path
from typing import Iterable

import numpy as np


def to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2")


def to_wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM mono WAV file contents."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(to_int16(samples).tobytes())
    return buf.getvalue()


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write a 16-bit PCM mono WAV; returns the path."""
    path = Path(path)
    path.write_bytes(to_wav_bytes(samples, sample_rate))
    return path


def read_wav_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """PCM WAV bytes -> (float32 mono samples, sample rate), trusting the bytes over the header sizes."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", data[body:body + 16])
        elif cid == b"data":
            if fmt is None:
                raise ValueError("WAV data chunk before its fmt chunk")
            tag, channels, rate, _, _, bits = fmt
            if tag not in (1, 0xFFFE) or bits != 16:
                raise ValueError(f"unsupported WAV encoding (format {tag}, {bits} bits)")
            pcm = data[body:min(len(data), body + size)]  # a bogus size runs to the end of the bytes
            pcm = pcm[:len(pcm) - len(pcm) % (2 * channels)]
            samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
            if channels > 1:
                samples = samples.reshape(-1, channels).mean(axis=1)
            return samples, rate
        pos = body + size + (size & 1)
    raise ValueError("WAV file has no data chunk")


def concat(chunks: Iterable[np.ndarray], sample_rate: int | None = None, gap_s: float = 0.0) -> np.ndarray:
    """Join float32 chunks into one array, optionally with `gap_s` of silence between them."""
    parts = [np.asarray(c, dtype=np.float32).reshape(-1) for c in chunks]
    parts = [p for p in parts if p.size]
    if not parts:
        return np.zeros(0, np.float32)
    if gap_s > 0 and sample_rate:
        gap = np.zeros(int(gap_s * sample_rate), np.float32)
        parts = [x for p in parts for x in (p, gap)][:-1]
    return np.concatenate(parts)


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Linear-interpolation resampling: enough to splice a fallback voice (22.05 kHz espeak-ng) into
    another voice's stream (24 kHz); not meant for music or for large downsampling ratios."""
    samples = np.asarray(samples, dtype=np.float32)
    if src_rate == dst_rate or samples.size == 0:
        return samples
    n_out = max(1, int(round(samples.size * dst_rate / src_rate)))
    x_out = np.arange(n_out, dtype=np.float64) * (src_rate / dst_rate)
    return np.interp(x_out, np.arange(samples.size), samples).astype(np.float32)
