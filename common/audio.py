"""Decode any common audio file or upload into mono float32 samples at one sample rate.

PyAV (installed with faster-whisper) carries its own FFmpeg libraries, so wav, webm/opus from a
browser microphone, ogg, mp3, flac and m4a all decode without a system ffmpeg. Decoding goes through
FFmpeg instead of `wave`/soundfile on purpose: espeak-ng writes WAV headers whose frame count is
0x7fffffff, which FFmpeg ignores (it reads to the end of the bytes) while stricter readers reject.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from common.errors import AudioError, UserInputError

TARGET_RATE = 16000
_FORMATS_HINT = "record again or upload wav/mp3/ogg/webm"


# Containers round their lengths (and resamplers add a few samples), so a clip of exactly the limit passes.
_SLACK_S = 0.5


def _limit_samples(max_seconds: float, sample_rate: int) -> int:
    return int((max_seconds + _SLACK_S) * sample_rate)


def _name(source: str | Path | bytes) -> str:
    return "the recording" if isinstance(source, (bytes, bytearray, memoryview)) else f"'{Path(source).name}'"


def _too_long(name: str, limit: float) -> AudioError:
    return AudioError(f"{name} is longer than the {limit:g} s limit; send a shorter recording or raise "
                      f"asr.max_audio_s")


def load_audio(source: str | Path | bytes, sample_rate: int = TARGET_RATE,
               max_seconds: float | None = None) -> np.ndarray:
    """Decode `source` (a path or the file's bytes) to a 1-D float32 array in [-1, 1], mono, at `sample_rate`.

    Raises UserInputError for a missing file and AudioError for anything that is not decodable audio,
    holds no samples, or runs longer than `max_seconds`.
    """
    import av  # imported here so that `import asr` stays light

    name = _name(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError(f"could not read audio from {name}: it is empty; {_FORMATS_HINT}")
        opened: str | io.BytesIO = io.BytesIO(bytes(source))
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise UserInputError(f"audio file '{path}' not found; check the path and try again")
        if path.stat().st_size == 0:
            raise AudioError(f"could not read audio from {name}: the file is empty; {_FORMATS_HINT}")
        opened = str(path)

    not_audio = AudioError(f"could not read audio from {name}: not an audio file or damaged; {_FORMATS_HINT}")
    # The resampler converts any layout/format/rate; "flt" gives float32 directly (no int16 round trip).
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    limit_samples = None if max_seconds is None else _limit_samples(max_seconds, sample_rate)
    parts: list[np.ndarray] = []
    total = 0
    try:
        with av.open(opened, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise not_audio  # e.g. an image or a video without sound
            stream = container.streams.audio[0]
            # Check the declared length first so a 3-hour upload is refused before it is decoded; browser
            # webm often declares none, so the running count below is the real guard.
            if max_seconds is not None and container.duration is not None:
                declared = container.duration / 1_000_000
                if declared > max_seconds + _SLACK_S:
                    raise _too_long(name, max_seconds)
            for frame in _frames(container, stream, av):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    parts.append(chunk)
                    total += chunk.size
                if limit_samples is not None and total > limit_samples:
                    raise _too_long(name, max_seconds)
            for out in resampler.resample(None):  # flush the resampler's tail
                parts.append(out.to_ndarray().reshape(-1))
    except (AudioError, UserInputError):
        raise
    except PermissionError as err:
        raise UserInputError(f"cannot read audio file {name}: permission denied; check the file") from err
    except (av.error.FFmpegError, ValueError, OSError, EOFError) as err:
        raise not_audio from err

    audio = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
    if audio.size == 0:
        raise AudioError(f"could not read audio from {name}: it holds no sound samples; {_FORMATS_HINT}")
    if max_seconds is not None and audio.size > limit_samples:
        raise _too_long(name, max_seconds)
    return np.clip(audio, -1.0, 1.0, out=audio)


def _frames(container, stream, av):
    """Decoded frames, skipping single damaged packets (a truncated upload still gives what it holds)."""
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError:
            continue


def as_samples(audio: str | Path | bytes | np.ndarray, sample_rate: int = TARGET_RATE,
               max_seconds: float | None = None) -> np.ndarray:
    """A path/bytes is decoded; an array is taken as already mono float at `sample_rate` and checked."""
    if isinstance(audio, np.ndarray):
        samples = np.asarray(audio)
        if np.issubdtype(samples.dtype, np.integer):  # int16 PCM, e.g. from a browser audio component
            samples = samples.astype(np.float32) / float(np.iinfo(samples.dtype).max + 1)
        samples = samples.astype(np.float32, copy=False)
        if samples.ndim == 2:  # (n, channels) or (channels, n): average to mono
            samples = samples.mean(axis=1 if samples.shape[0] > samples.shape[1] else 0)
        if samples.ndim != 1 or samples.size == 0:
            raise AudioError("the recording holds no sound samples; record again")
        if max_seconds is not None and samples.size > _limit_samples(max_seconds, sample_rate):
            raise _too_long("the recording", max_seconds)
        return samples
    return load_audio(audio, sample_rate=sample_rate, max_seconds=max_seconds)
