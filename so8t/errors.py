"""Typed errors. Every user-facing failure is a ``So8tError``; the CLI prints ``str(err)`` as one line.

A message names the file (when there is one), the problem, and where possible the fix.
"""

from __future__ import annotations

from pathlib import Path


class So8tError(Exception):
    """Base of all so8t errors. ``path`` is the file or directory concerned, if any."""

    def __init__(self, message: str, path: str | Path | None = None, hint: str | None = None):
        self.message = message
        self.path = Path(path) if path is not None else None
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path is not None else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class GroupError(So8tError, ValueError):
    """Invalid SO(8) setup."""


class RotationDimError(GroupError):
    """A rotation dimension other than 8 was requested (SO8T means SO(8), always)."""


class HiddenSizeError(GroupError):
    """The hidden size is not divisible by 8, so it cannot be split into 8-dim blocks."""


class ConfigError(So8tError):
    """config.json is missing, unreadable, or describes something we do not convert."""


class CheckpointError(So8tError):
    """A checkpoint is broken: missing shard, truncated safetensors, inconsistent index."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint would need code execution (pickle .bin, trust_remote_code) or escapes its directory."""


class GGUFError(So8tError):
    """A GGUF file is corrupt, incomplete, or not what llama.cpp expects."""


class QuantTypeError(So8tError, ValueError):
    """An unknown or unsupported quantization type was requested."""


class ExportError(So8tError):
    """GGUF export failed."""


class DataError(So8tError):
    """A training or evaluation data file is malformed: ``path`` is ``file:line`` where a line is at fault."""


class TrainError(So8tError):
    """Training cannot start or resume (incompatible options, missing or foreign training state)."""


class RuntimeLoadError(So8tError):
    """llama.cpp could not load or run a file."""


class LlamaApiError(RuntimeLoadError):
    """The installed llama-cpp-python lacks a private or low-level symbol so8t uses (``so8t.llama.api``)."""
