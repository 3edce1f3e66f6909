"""Streaming reader of Hugging Face Qwen2-VL checkpoints (safetensors only).

``CheckpointReader(path)`` validates the whole directory on open, reading only config.json, the shard
index and each shard's header: nothing is trusted that could run code (pickle ``.bin`` files,
``trust_remote_code``), no file outside the directory is read, and a broken checkpoint (missing shard,
truncated file, tensor listed but absent, incomplete model) fails here with a typed error naming the
file, not halfway through a conversion. Tensors are then read one at a time, each from its byte range
in the shard, into memory the tensor owns.

Note [why not safe_open for the data]: ``safetensors.safe_open`` maps the whole shard; the pages a pass
touches stay resident while the map lives, so streaming the 4.4 GB replica of Qwen2-VL-2B that way
peaked at 4.8 GB RSS. The header has already been checked here (offsets, dtypes, sizes against the
file size), so reading each tensor's bytes with plain file I/O is equally safe and peaks at one tensor.
safetensors stores little-endian data, the byte order of every platform torch ships for.

Names: ``names()``, ``get()`` and ``items()`` speak canonical hub names (``model.layers.N.*``,
``model.embed_tokens.weight``, ``model.norm.weight``, ``lm_head.weight``, ``visual.*``) whether the files
use the hub or the transformers-5 spelling (``so8t.checkpoint.names``). Tensors come back in the dtype
stored on disk (bf16, f16 or f32); the consumer casts.

Example:
    >>> reader = CheckpointReader("Qwen2-VL-2B-Instruct")
    >>> reader.text_config.hidden_size, reader.dtype
    (1536, torch.bfloat16)
    >>> for name, tensor in reader.items(prefix="visual."):
    ...     ...
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import torch

from so8t import profile
from so8t.checkpoint import config as cfg
from so8t.checkpoint import config_rules
from so8t.checkpoint import names as nm
from so8t.checkpoint.safetensors_header import TensorEntry, read_header
from so8t.errors import CheckpointError, UnsafeCheckpointError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
#: Weight files that are Python pickles: loading them can execute arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
#: Files carried along with the weights (tokenizer, processor, generation settings); config.json apart.
AUX_NAMES = (
    "generation_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
)


def _allowed_roots(directory: Path) -> list[Path]:
    """Where shard files may resolve to: the directory itself, plus the ``blobs`` store of a Hugging Face
    cache snapshot (``<repo>/snapshots/<rev>/`` holds symlinks into ``<repo>/blobs/``)."""
    roots = [directory.resolve()]
    if directory.parent.name == "snapshots":
        roots.append((directory.parent.parent / "blobs").resolve())
    return roots


def _inside(directory: Path, file_name: str, index_path: Path) -> Path:
    """``directory / file_name`` if it stays inside; UnsafeCheckpointError otherwise."""
    pure = Path(file_name)
    if not file_name or pure.is_absolute() or ".." in pure.parts:
        raise UnsafeCheckpointError(
            f"index entry {file_name!r} points outside the checkpoint directory", path=index_path
        )
    target = directory / pure
    resolved = target.resolve()
    if not any(resolved.is_relative_to(root) for root in _allowed_roots(directory)):
        raise UnsafeCheckpointError(
            f"shard {file_name!r} is a link to {resolved}, outside the checkpoint directory", path=target
        )
    return target


class CheckpointReader:
    """Validated, streaming view of a Qwen2-VL checkpoint directory (see the module docstring).

    Attributes:
        path: the checkpoint directory.
        model_config: the typed, validated config (``so8t.checkpoint.config.ModelConfig``).
        config: config.json as a dict (unmodified).
        text_config / vision_config: ``model_config.text`` / ``model_config.vision``.
        layout: ``"hub"`` or ``"transformers5"`` (how the tensor names are spelled on disk).
        shard_files: the safetensors files, then the index if there is one.
        aux_files: tokenizer / processor / generation files present in the directory.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointError("checkpoint directory not found", path=self.path)
        self.model_config = cfg.read_config(self.path)
        self.config = self.model_config.raw
        self.text_config = self.model_config.text
        self.vision_config = self.model_config.vision
        self._weight_map: dict[str, str] | None = None  # disk name -> file name, from the index
        self._index_path, files = self._weight_files()
        self._entries = self._read_entries(files)
        files = list(files.values())
        self.layout = nm.detect_layout(e.name for e in self._entries.values())
        self._check_complete()
        self.shard_files = files + ([self._index_path] if self._index_path else [])
        self.aux_files = [self.path / n for n in AUX_NAMES if (self.path / n).is_file()]

    # -- validation -------------------------------------------------------------------------------------

    def _weight_files(self) -> tuple[Path | None, dict[str, Path]]:
        """(index or None, {file name as the index spells it: path}) after the safety checks."""
        index_path = self.path / INDEX_NAME
        if index_path.is_file():
            _inside(self.path, INDEX_NAME, index_path)
            return index_path, self._files_from_index(index_path)
        single = self.path / SINGLE_NAME
        if single.is_file():
            return None, {SINGLE_NAME: _inside(self.path, SINGLE_NAME, single)}
        pickles = sorted(p.name for p in self.path.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
        if pickles or (self.path / "pytorch_model.bin.index.json").is_file():
            raise UnsafeCheckpointError(
                f"only pickle weights found ({', '.join(pickles) or 'pytorch_model.bin.index.json'}): "
                "pickle checkpoints can execute code; convert to safetensors",
                path=self.path,
            )
        raise CheckpointError(f"no {SINGLE_NAME} or {INDEX_NAME} in the checkpoint directory", path=self.path)

    def _files_from_index(self, index_path: Path) -> dict[str, Path]:
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"invalid JSON in the shard index: {err}", path=index_path) from err
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError("shard index has no weight_map", path=index_path)
        self._weight_map = {}
        files: dict[str, Path] = {}
        for tensor, file_name in weight_map.items():
            if not isinstance(file_name, str):
                raise CheckpointError(f"weight_map entry for {tensor!r} is not a file name", path=index_path)
            if file_name not in files:
                if file_name.endswith(PICKLE_SUFFIXES):
                    raise UnsafeCheckpointError(
                        f"index lists pickle file {file_name!r}: pickle checkpoints can execute code; "
                        "convert to safetensors",
                        path=index_path,
                    )
                target = _inside(self.path, file_name, index_path)
                if not target.is_file():
                    raise CheckpointError(
                        f"shard {file_name!r} listed in {INDEX_NAME} is missing", path=target
                    )
                files[file_name] = target
            self._weight_map[tensor] = file_name
        return {name: files[name] for name in sorted(files)}

    def _read_entries(self, files: dict[str, Path]) -> dict[str, TensorEntry]:
        """Canonical name -> header entry, for the tensors the index lists (or all, for a single file)."""
        headers = {file_name: read_header(path) for file_name, path in files.items()}
        if self._weight_map is None:
            listed = [(name, SINGLE_NAME) for name in headers[SINGLE_NAME]]
        else:
            listed = list(self._weight_map.items())
        entries: dict[str, TensorEntry] = {}
        for disk_name, file_name in listed:
            entry = headers[file_name].get(disk_name)
            if entry is None:
                raise CheckpointError(
                    f"tensor {disk_name!r} is listed in {INDEX_NAME} but absent from the shard",
                    path=files[file_name],
                )
            canonical = nm.to_hub(disk_name)
            if canonical in entries:
                raise CheckpointError(
                    f"tensor {canonical!r} appears twice (as {entries[canonical].name!r} and {disk_name!r})",
                    path=files[file_name],
                )
            entries[canonical] = entry
        return entries

    def _check_complete(self) -> None:
        """The config against the tensors (``so8t.checkpoint.config_rules``): nothing missing, nothing
        extra, every shape and dtype as the config implies."""
        config_rules.check_tensors(self.model_config, self._entries, self._index_path or self.path / SINGLE_NAME)

    # -- access -----------------------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        """The storage dtype holding most bytes (a checkpoint is normally uniform)."""
        totals: dict[str, int] = {}
        for entry in self._entries.values():
            totals[entry.dtype] = totals.get(entry.dtype, 0) + entry.nbytes
        return getattr(torch, max(sorted(totals), key=totals.__getitem__))

    @property
    def tied(self) -> bool:
        """True when the output projection is the embedding (no separate ``lm_head.weight`` is used)."""
        return self.text_config.tie_word_embeddings

    @property
    def preprocessor_config(self) -> dict | None:
        """preprocessor_config.json (image mean/std, patch and merge sizes), or None when absent."""
        path = self.path / "preprocessor_config.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise CheckpointError(f"invalid JSON: {err}", path=path) from err

    def names(self) -> list[str]:
        """Canonical names of every tensor, in natural order (``layers.2`` before ``layers.10``)."""
        return sorted(self._entries, key=nm.natural_key)

    def __contains__(self, name: str) -> bool:
        return nm.to_hub(name) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, name: str) -> TensorEntry:
        """Header facts of one tensor (file, on-disk name, dtype, shape) without reading it."""
        try:
            return self._entries[nm.to_hub(name)]
        except KeyError:
            raise CheckpointError(f"no tensor {name!r} in the checkpoint", path=self.path) from None

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entry(name).shape

    def get(self, name: str) -> torch.Tensor:
        """One tensor (canonical or transformers-5 name), read from disk now, in its stored dtype.

        The result owns its memory (no file mapping stays behind it), so a pass over the checkpoint holds
        one tensor at a time.
        """
        entry = self.entry(name)
        return self._read(entry, entry.begin, entry.nbytes).view(getattr(torch, entry.dtype)).reshape(entry.shape)

    def get_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of a tensor (first axis), read from disk now in the stored dtype: a slice of
        the embedding matrix without reading the rest of it."""
        entry = self.entry(name)
        rows = entry.shape[0] if entry.shape else 0
        if not 0 <= start < stop <= rows:
            raise CheckpointError(f"rows {start}:{stop} outside tensor {entry.name!r} of {rows} rows", path=entry.file)
        row_bytes = entry.nbytes // rows
        raw = self._read(entry, entry.begin + start * row_bytes, (stop - start) * row_bytes)
        return raw.view(getattr(torch, entry.dtype)).reshape(stop - start, *entry.shape[1:])

    @staticmethod
    def _read(entry: TensorEntry, offset: int, nbytes: int) -> torch.Tensor:
        """``nbytes`` bytes of ``entry``'s file from ``offset``, into memory the result owns."""
        raw = torch.empty(nbytes, dtype=torch.uint8)
        try:
            with open(entry.file, "rb") as handle, profile.phase("read"):
                handle.seek(offset)
                got = handle.readinto(memoryview(raw.numpy()))
        except OSError as err:
            raise CheckpointError(
                f"cannot read tensor {entry.name!r}: {err.strerror or err}", path=entry.file
            ) from err
        if got != nbytes:
            raise CheckpointError(f"file shrank while reading tensor {entry.name!r}", path=entry.file)
        return raw

    def items(self, prefix: str | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """Stream ``(canonical_name, tensor)`` in natural name order, one tensor in memory at a time."""
        for name in self.names():
            if prefix is None or name.startswith(prefix):
                yield name, self.get(name)

    def close(self) -> None:
        """Nothing stays open between reads; kept so the reader can be used as a context manager."""

    def __enter__(self) -> CheckpointReader:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CheckpointReader({str(self.path)!r}, layout={self.layout!r}, tensors={len(self)})"
