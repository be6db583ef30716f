"""The project's one error hierarchy.

Every error a user can cause or fix is a `RagError` with a one-line, plain-words message that says
what is wrong and what to do. The edges (CLI, web page) turn these into an exit status 2 and one
line on stderr, or a page warning; full details go only to the log.
"""
from __future__ import annotations


class RagError(Exception):
    """Base class: `str(err)` is the one-line message shown to the user."""

    exit_code = 2


class UserInputError(RagError):
    """Bad input: empty question, missing file, unreadable audio, bad URL."""


class ConfigError(UserInputError):
    """The configuration file or a --set override is invalid."""


class AudioError(UserInputError):
    """Audio that cannot be decoded, is too long, or holds no speech."""


class NoSpeechError(AudioError):
    """The audio decoded fine but nobody said anything in it."""


class SourceError(UserInputError):
    """One document or URL could not be ingested (reported per source, the rest still goes in)."""


class IndexMismatchError(RagError):
    """The index on disk was built with other embedding or chunking settings."""


class BackendError(RagError):
    """A model or server could not be loaded or reached (missing weights, server down, timeout)."""


class BusyError(RagError):
    """Too many requests are waiting; try again shortly."""


class Cancelled(RagError):
    """The request was cancelled (client went away)."""


def one_line(err: BaseException) -> str:
    """A single line for the user: RagErrors as written, anything else with its type named."""
    text = str(err) if isinstance(err, RagError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split()) or type(err).__name__
