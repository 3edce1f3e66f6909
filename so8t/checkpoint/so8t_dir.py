"""The SO8T checkpoint directory: a Qwen2-VL checkpoint plus SO(8) gates, readable by CheckpointReader.

Layout (written by :class:`so8t.conversion.Qwen2VLToSO8TConverter`)::

    config.json                   source config + an "so8t" section (see so8t_section())
    model*.safetensors[.index.json]  the source shards, byte for byte
    so8t_gates.safetensors        float32 gate generators and the optional safety head
    tokenizer / processor files   copied from the source

Gate tensors in ``so8t_gates.safetensors``: ``layers.{i}.{gate}.generators`` ``[hidden/8, 28]`` for every
decoder layer ``i`` and every gate of ``so8t.adapters.qwen2vl.GATE_NAMES`` (``attn_rot``, ``attn_safe``,
``attn_cmd``, ``mlp_rot``); optionally ``safety_head.{0,2}.{weight,bias}``. Generators are the strict upper
triangle of the skew matrix ``A`` read row by row; ``R = map(A)`` with the map named in the config;
row vectors, ``y = x @ R``.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from pathlib import Path

import torch
from safetensors import safe_open

from so8t import group
from so8t.adapters import qwen2vl
from so8t.errors import CheckpointError, ConfigError
from so8t.safety import SAFETY_CLASSES, STATE_PREFIX

GATES_FILE = "so8t_gates.safetensors"
CONFIG_FILE = "config.json"
SO8T_VERSION = 1
PARAMETRISATION = (
    "generators[hidden/8, 28] = strict upper triangle of skew A, row by row; R = map(A) per 8-dim block; "
    "row vectors y = x @ R"
)


def gate_key(layer: int, gate: str) -> str:
    """Name of a gate's generators in the gates file."""
    return f"layers.{layer}.{gate}.generators"


def so8t_section(
    *,
    hidden_size: int,
    num_layers: int,
    rotation_map: str,
    rotation_init: str,
    seed: int | None,
    safety_head: bool,
    source_name: str,
    source_files: dict[str, str],
    file_hash: str = "blake3",
) -> dict:
    """The ``"so8t"`` section of config.json.

    ``source_name`` is the base name of the source checkpoint's directory (``source.name``): a name, never a
    path of the machine that converted it (checkpoints written before it hold ``source.path``, absolute).
    ``source_files`` maps each source weight file name to its hex digest made with ``file_hash``
    (``source.hash``; absent in checkpoints written before it, which hold sha256 digests).
    ``source.sha256`` is the sha256 of the ``name:digest`` lines, sorted: one identity of the source
    weights, repeated in every exported GGUF as ``so8t.source_sha256``."""
    combined = "\n".join(f"{name}:{digest}" for name, digest in sorted(source_files.items()))
    return {
        "version": SO8T_VERSION,
        "rotation_dim": group.ROTATION_DIM,
        "group": "SO(8)",
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "gate_sites": {site.name: list(site.gates) for site in qwen2vl.FOLD_SITES},
        "gate_order": "y = x @ R_gates[0] @ R_gates[1] @ ... (row vectors), applied before the residual add",
        "map": group.RotationMap(rotation_map).value,
        "parametrisation": PARAMETRISATION,
        "rotation_init": rotation_init,
        "seed": seed,
        "gates_file": GATES_FILE,
        "safety_head": safety_head,
        "safety_classes": list(SAFETY_CLASSES),
        "source": {
            "name": source_name,
            "hash": file_hash,
            "files": dict(sorted(source_files.items())),
            "sha256": hashlib.sha256(combined.encode()).hexdigest(),
        },
    }


class SO8TCheckpoint:
    """Read an SO8T checkpoint directory: the source weights (``.reader``) and the gates.

    Raises ``ConfigError`` when config.json has no ``so8t`` section (a plain checkpoint) or an unknown
    version, ``CheckpointError`` when the gates file is missing, incomplete or of the wrong shape.
    """

    def __init__(self, path: str | Path):
        from so8t.checkpoint import CheckpointReader

        self.path = Path(path)
        config_path = self.path / CONFIG_FILE
        if not config_path.is_file():
            raise ConfigError("config.json not found", path=config_path)
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"config.json is not readable JSON: {err}", path=config_path) from err
        section = config.get("so8t")
        if not isinstance(section, dict):
            raise ConfigError(
                "not an SO8T checkpoint (config.json has no 'so8t' section)",
                path=config_path,
                hint="convert it first with 'so8t convert'",
            )
        if section.get("version") != SO8T_VERSION:
            raise ConfigError(f"unsupported so8t version {section.get('version')!r}", path=config_path)
        group.check_rotation_dim(section.get("rotation_dim", 0))
        self.so8t_config: dict = section
        self.reader = CheckpointReader(self.path)
        self.gates_path = self.path / GATES_FILE
        if not self.gates_path.is_file():
            raise CheckpointError(f"{GATES_FILE} is missing", path=self.gates_path)
        self._check_gates()

    @property
    def hidden_size(self) -> int:
        return self.reader.text_config.hidden_size

    @property
    def source_file_hash(self) -> str:
        """Name of the digest in ``source.files``: ``source.hash``, or "sha256" for checkpoints older
        than that key. ``ConfigError`` for a name this version cannot recompute."""
        from so8t.copyhash import KNOWN_HASHES

        source = self.so8t_config.get("source") or {}
        name = source.get("hash", "sha256") if isinstance(source, dict) else None
        if name not in KNOWN_HASHES:
            raise ConfigError(
                f"so8t.source.hash {name!r} is not a known file hash ({', '.join(KNOWN_HASHES)})",
                path=self.path / CONFIG_FILE,
            )
        return name

    @property
    def num_layers(self) -> int:
        return self.reader.text_config.num_hidden_layers

    @property
    def rotation_map(self) -> group.RotationMap:
        return group.RotationMap(self.so8t_config["map"])

    @cached_property
    def _gate_tensors(self) -> dict[str, torch.Tensor]:
        try:
            with safe_open(self.gates_path, framework="pt") as handle:
                return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open is not iterable)
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(f"cannot read gates file: {err}", path=self.gates_path) from err

    def _check_gates(self) -> None:
        shape = (group.num_blocks(self.hidden_size), group.N_GENERATORS)
        tensors = self._gate_tensors
        for layer in range(self.num_layers):
            for gate in qwen2vl.GATE_NAMES:
                key = gate_key(layer, gate)
                if key not in tensors:
                    raise CheckpointError(f"gate tensor {key} is missing", path=self.gates_path)
                if tuple(tensors[key].shape) != shape:
                    raise CheckpointError(
                        f"gate tensor {key} has shape {tuple(tensors[key].shape)}, expected {shape}",
                        path=self.gates_path,
                    )
                if not torch.isfinite(tensors[key]).all():
                    raise CheckpointError(f"gate tensor {key} has NaN or Inf entries", path=self.gates_path)
        if self.so8t_config.get("safety_head") and self.safety_head_state() is None:
            raise CheckpointError(
                "config announces a safety head but the gates file has none", path=self.gates_path
            )

    def gate_generators(self, layer: int, gate: str) -> torch.Tensor:
        """Generators ``[hidden/8, 28]`` (float32) of ``gate`` in decoder layer ``layer``."""
        return self._gate_tensors[gate_key(layer, gate)]

    @cached_property
    def _rotations(self) -> torch.Tensor:
        """Every gate's rotations ``[layers, gates, hidden/8, 8, 8]`` in float64, from ONE batched map call.

        Note [batched expm]: ``torch.linalg.matrix_exp`` costs about the same for 192 blocks as for 20,000
        (its cost is dominated by per-call work), so mapping all gates at once is ~25x faster on
        Qwen2-VL-2B than one call per gate.
        """
        stacked = torch.stack(
            [
                torch.stack([self.gate_generators(layer, gate) for gate in qwen2vl.GATE_NAMES])
                for layer in range(self.num_layers)
            ]
        ).to(torch.float64)
        return group.rotation(stacked, self.rotation_map)

    def rotation(self, layer: int, gate: str) -> torch.Tensor:
        """Per-block rotations ``[hidden/8, 8, 8]`` of one gate, float64."""
        return self._rotations[layer, qwen2vl.GATE_NAMES.index(gate)]

    def site_rotation(self, layer: int, site: qwen2vl.FoldSite) -> torch.Tensor:
        """Effective per-block rotation of a fold site (its gates composed in order), float64."""
        return group.compose_chain(self.rotation(layer, gate) for gate in site.gates)

    def safety_head_state(self) -> dict[str, torch.Tensor] | None:
        """The ``safety_head.*`` tensors of the gates file, or None when there is no safety head."""
        state = {k: v for k, v in self._gate_tensors.items() if k.startswith(STATE_PREFIX)}
        return state or None
