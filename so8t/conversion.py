"""Qwen2-VL -> SO8T conversion: copy the source checkpoint, add SO(8) gates (and a safety head).

The converted directory (format in :mod:`so8t.checkpoint.so8t_dir`) holds the source shards byte for
byte, ``so8t_gates.safetensors`` with generators for every gate of every decoder layer, and config.json
with an ``so8t`` section recording the map, the init, the seed and the BLAKE3 digest of every source
weight file (``source.hash`` names the function; checkpoints written before it hold sha256). Identity
init (the default) gives zero generators, so the SO8T model computes exactly what the source computes;
``random`` draws seeded generators (tests, experiments).

The conversion streams: weights are copied by the kernel range by range (``so8t.copyhash``: each copied
range is hashed on a second thread), or hard-linked with ``link_weights``; never loaded as tensors, so
memory stays small and the time is disk-bound. The output is written atomically.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from so8t import group
from so8t.adapters import qwen2vl
from so8t.checkpoint.so8t_dir import CONFIG_FILE, GATES_FILE, gate_key, so8t_section
from so8t.copyhash import HASH_NAME, copy_hashed, link_hashed
from so8t.errors import ConfigError, GroupError, HiddenSizeError, So8tError
from so8t.gates import INITS, init_generators
from so8t.io import atomic_path
from so8t.safety import SafetyHead


@dataclass(frozen=True)
class ConversionResult:
    """What ``so8t.convert`` wrote: the SO8T directory and the facts of its gates."""

    path: Path
    num_layers: int
    gates_per_layer: int
    hidden_size: int
    rotation_init: str
    map: str
    safety_head: bool


class Qwen2VLToSO8TConverter:
    """Convert a Hugging Face Qwen2-VL checkpoint directory into an SO8T checkpoint directory.

    Args:
        input_model: source checkpoint directory (validated by ``CheckpointReader`` on open).
        hidden_size: expected text hidden size; a mismatch with config.json is a ``HiddenSizeError``.
        rotation_dim: must be 8 (``RotationDimError`` otherwise).
        safety_features: add the safety head (seeded init).
        rotation_init: ``"identity"`` (zero generators, default) or ``"random"`` (seeded).
        seed: seed for random gates and the safety head (None means 0).
        map: ``"exp"`` or ``"cayley"``, the generator -> rotation map recorded for every consumer.
        link_weights: hard-link the source's weight files into the output instead of copying them
            (``so8t.copyhash.link_hashed``: no disk and no copy time; a copy where the output lies on another
            filesystem). Output and source then share those files, so an edit of either in place changes
            both; so8t itself never edits them in place.
        progress: show a tqdm bar on stderr.

    Example:
        >>> Qwen2VLToSO8TConverter("Qwen2-VL-2B-Instruct").convert("qwen2vl-so8t")
    """

    def __init__(
        self,
        input_model: str | Path,
        *,
        hidden_size: int | None = None,
        rotation_dim: int = group.ROTATION_DIM,
        safety_features: bool = False,
        rotation_init: str = "identity",
        seed: int | None = None,
        map: str = "exp",
        link_weights: bool = False,
        progress: bool = True,
    ):
        group.check_rotation_dim(rotation_dim)
        if rotation_init not in INITS:
            raise GroupError(
                f"unknown rotation init {rotation_init!r}", hint=f"use one of {', '.join(INITS)}"
            )
        try:
            self.map = group.RotationMap(map)
        except ValueError:
            choices = ", ".join(m.value for m in group.RotationMap)
            raise GroupError(f"unknown rotation map {map!r}", hint=f"use one of {choices}") from None
        from so8t.checkpoint import CheckpointReader

        self.reader = CheckpointReader(input_model)
        self.input_model = self.reader.path
        config_path = self.input_model / CONFIG_FILE
        if "so8t" in self.reader.config:
            raise ConfigError(
                "already an SO8T checkpoint (config.json has an 'so8t' section)", path=config_path
            )
        self.hidden_size = self.reader.text_config.hidden_size
        self.num_layers = self.reader.text_config.num_hidden_layers
        if hidden_size is not None and int(hidden_size) != self.hidden_size:
            raise HiddenSizeError(
                f"--hidden-size {hidden_size} does not match hidden_size {self.hidden_size} in config.json",
                path=config_path,
            )
        self.n_blocks = group.num_blocks(self.hidden_size)
        self.safety_features = safety_features
        self.rotation_init = rotation_init
        self.seed = 0 if seed is None else int(seed)
        self.link_weights = link_weights
        self.progress = progress

    def gate_tensors(self) -> dict[str, torch.Tensor]:
        """All tensors of ``so8t_gates.safetensors`` (float32), deterministic for the seed."""
        seeds = torch.Generator().manual_seed(self.seed)
        tensors = {}
        for layer in range(self.num_layers):
            for gate in qwen2vl.GATE_NAMES:
                gate_seed = int(torch.randint(0, 2**62, (1,), generator=seeds))
                tensors[gate_key(layer, gate)] = init_generators(self.n_blocks, self.rotation_init, gate_seed)
        if self.safety_features:
            head_seed = int(torch.randint(0, 2**62, (1,), generator=seeds))
            tensors.update(SafetyHead(self.hidden_size, seed=head_seed).file_state())
        return tensors

    def _check_output(self, output: Path) -> None:
        out = output.resolve()
        src = self.input_model.resolve()
        if out == src or src in out.parents:
            raise So8tError("output must not be the input checkpoint or lie inside it", path=output)

    def convert(self, output_model: str | Path) -> Path:
        """Write the SO8T directory at ``output_model`` (replacing it atomically); return its path."""
        output = Path(output_model)
        self._check_output(output)
        weight_files = list(self.reader.shard_files)
        aux_files = [p for p in self.reader.aux_files if p.name != CONFIG_FILE]
        total = sum(p.stat().st_size for p in weight_files + aux_files)
        hashes: dict[str, str] = {}
        with (
            atomic_path(output) as tmp,
            tqdm(
                total=total, unit="B", unit_scale=True, desc="so8t convert", disable=not self.progress
            ) as bar,
        ):
            tmp.mkdir()
            place = link_hashed if self.link_weights else copy_hashed
            for src in weight_files:
                rel = src.relative_to(self.input_model)
                hashes[rel.as_posix()] = place(src, tmp / rel, bar.update)
            for src in aux_files:
                copy_hashed(src, tmp / src.relative_to(self.input_model), bar.update)
            bar.set_postfix_str("gates")
            # One metadata key only: safetensors keeps metadata in a hash map, so with two keys their order
            # (and the file's bytes) would change from run to run.
            save_file(self.gate_tensors(), str(tmp / GATES_FILE), metadata={"format": "pt"})
            config = dict(self.reader.config)
            config["so8t"] = so8t_section(
                hidden_size=self.hidden_size,
                num_layers=self.num_layers,
                rotation_map=self.map.value,
                rotation_init=self.rotation_init,
                seed=self.seed,
                safety_head=self.safety_features,
                source_name=self.input_model.resolve().name,
                source_files=hashes,
                file_hash=HASH_NAME,
            )
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
            shutil.copymode(tmp / CONFIG_FILE, tmp / GATES_FILE)  # safetensors writes 0600; follow umask
        return output

    def result(self, output: Path) -> ConversionResult:
        """The ``ConversionResult`` of this converter's output at ``output``."""
        return ConversionResult(
            Path(output), self.num_layers, len(qwen2vl.GATE_NAMES), self.hidden_size, self.rotation_init,
            self.map.value, self.safety_features,
        )
