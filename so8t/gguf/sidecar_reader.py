"""Reading an SO8T sidecar GGUF (layout: ``so8t.gguf.sidecar``): ``read_sidecar`` -> ``Sidecar``, whose
safety head runs on hidden states from llama.cpp or PyTorch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from so8t.errors import GGUFError, So8tError
from so8t.gguf.sidecar import (
    ARCHITECTURE,
    SAFETY_PREFIX,
    SAFETY_TENSORS,
    SIDECAR_VERSION,
    generators_name,
    rotation_name,
)
from so8t.group import N_GENERATORS, ROTATION_DIM


@dataclass
class SafetyVerdict:
    """Result of the safety head on one hidden state."""

    label: str
    probabilities: dict[str, float]
    logits: np.ndarray


@dataclass
class SidecarSafetyHead:
    """The safety head rebuilt from a sidecar: ``gelu(h @ W0.T + b0) @ W2.T + b2`` (row vectors).

    Input: final-norm hidden states, the ones llama.cpp returns in embedding mode for the last token,
    as numpy or torch, shape ``[hidden]`` or ``[batch, hidden]``. Computed in float64.
    """

    weights: dict[str, np.ndarray]
    classes: tuple[str, ...]

    def logits(self, hidden) -> np.ndarray:
        """The forward pass of ``so8t.safety.SafetyHead`` (the one implementation), in float64."""
        import torch

        from so8t.safety import SafetyHead

        h = torch.as_tensor(np.asarray(hidden.detach().cpu() if hasattr(hidden, "detach") else hidden))
        width = self.weights["0.weight"].shape[1]
        if h.shape[-1] != width:
            raise So8tError(f"hidden state has size {h.shape[-1]}, the safety head expects {width}")
        head = SafetyHead.from_state({k: np.asarray(v, dtype=np.float64) for k, v in self.weights.items()})
        with torch.no_grad():
            return head(h.to(torch.float64)).numpy()

    def verdict(self, hidden) -> SafetyVerdict:
        """Verdict for one hidden state ``[hidden]``."""
        logits = self.logits(hidden).reshape(-1)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return SafetyVerdict(
            label=self.classes[int(np.argmax(logits))],
            probabilities={c: float(v) for c, v in zip(self.classes, p)},
            logits=logits,
        )


@dataclass
class Sidecar:
    """A loaded sidecar. Arrays are copies (the file is closed); keys are ``(layer, gate)``."""

    path: Path
    metadata: dict[str, object]
    generators: dict[tuple[int, str], np.ndarray]
    rotations: dict[tuple[int, str], np.ndarray]
    safety_weights: dict[str, np.ndarray] | None
    gate_sites: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def text_content_hash(self) -> str:
        return str(self.metadata["so8t.text_content_hash"])

    @property
    def rotation_map(self) -> str:
        return str(self.metadata["so8t.map"])

    @property
    def num_layers(self) -> int:
        return int(self.metadata["so8t.block_count"])

    @property
    def hidden_size(self) -> int:
        return int(self.metadata["so8t.embedding_length"])

    @property
    def gates(self) -> tuple[str, ...]:
        return tuple(self.metadata["so8t.gates"])

    @property
    def safety_classes(self) -> tuple[str, ...]:
        return tuple(self.metadata["so8t.safety_classes"])

    @property
    def head_trained(self) -> bool:
        """True only when ``so8t train`` trained the head (older sidecars lack the key: untrained)."""
        return bool(self.metadata.get("so8t.safety_head.trained", False)) and self.safety_weights is not None

    @property
    def eval_metrics(self) -> dict | None:
        """The training run's final eval metrics, or None."""
        import json

        text = str(self.metadata.get("so8t.safety_head.eval_metrics", "") or "")
        return json.loads(text) if text else None

    def site_rotation(self, layer: int, site: str) -> np.ndarray:
        """Effective per-block rotation of a site: its gates multiplied in order (row vectors)."""
        from so8t import group

        return group.compose_chain(self.rotations[(layer, gate)] for gate in self.gate_sites[site])

    def non_rotations(self, tol: float | None = None) -> list[tuple[int, str, float, float]]:
        """``(layer, gate, max|R^T R - I|, max|det R - 1|)`` for every stored rotation not in SO(8)."""
        import torch

        from so8t import group

        bad = []
        for (layer, gate), r in sorted(self.rotations.items()):
            t = torch.from_numpy(r)
            if not group.in_so8(t, tol=tol):
                orth, det = group.so8_defect(t) if torch.isfinite(t).all() else (float("nan"), float("nan"))
                bad.append((layer, gate, orth, det))
        return bad

    def safety_head(self) -> SidecarSafetyHead | None:
        if self.safety_weights is None:
            return None
        return SidecarSafetyHead(self.safety_weights, self.safety_classes)


def _field_value(reader, key: str, path: Path):
    fld = reader.get_field(key)
    if fld is None:
        raise GGUFError(f"sidecar metadata key {key!r} is missing", path=path)
    return fld.contents()  # a list for arrays


_REQUIRED_KEYS = (
    "general.architecture",
    "so8t.format_version",
    "so8t.rotation_dim",
    "so8t.group",
    "so8t.map",
    "so8t.block_count",
    "so8t.embedding_length",
    "so8t.gates",
    "so8t.gate_sites",
    "so8t.safety_head",
    "so8t.safety_classes",
    "so8t.text_content_hash",
)


def read_sidecar(path: str | Path) -> Sidecar:
    """Load and check a sidecar GGUF; ``GGUFError`` names the problem when the file is malformed."""
    from so8t.gguf.reader import open_gguf

    path = Path(path)
    if not path.is_file():
        raise GGUFError("sidecar file not found", path=path)
    try:
        reader = open_gguf(path)
    except Exception as err:  # gguf-py raises ValueError/struct.error/IndexError on bad or truncated files
        raise GGUFError(f"not a readable GGUF file: {err}", path=path) from err
    meta, sites = _read_metadata(reader, path)
    hidden, layers = int(meta["so8t.embedding_length"]), int(meta["so8t.block_count"])
    gates = tuple(meta["so8t.gates"])
    tensors = {t.name: t for t in reader.tensors}
    has_head = bool(meta["so8t.safety_head"])
    expected = _expected_tensors(hidden, layers, gates, len(meta["so8t.safety_classes"]) if has_head else None)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing:
        raise GGUFError(
            f"sidecar tensors missing: {missing[:4]}{' ...' if len(missing) > 4 else ''}", path=path
        )
    if extra:
        raise GGUFError(
            f"unexpected sidecar tensors: {extra[:4]}{' ...' if len(extra) > 4 else ''}", path=path
        )

    arrays = {}
    for name, (shape, qtype) in expected.items():
        t = tensors[name]
        if t.tensor_type != qtype:
            raise GGUFError(f"tensor {name} is {t.tensor_type.name}, expected {qtype.name}", path=path)
        data = np.array(t.data, copy=True)
        if data.shape != shape:
            raise GGUFError(f"tensor {name} has shape {data.shape}, expected {shape}", path=path)
        arrays[name] = data
    del reader, tensors

    return Sidecar(
        path=path,
        metadata=meta,
        generators={(i, g): arrays[generators_name(i, g)] for i in range(layers) for g in gates},
        rotations={(i, g): arrays[rotation_name(i, g)] for i in range(layers) for g in gates},
        safety_weights={s: arrays[SAFETY_PREFIX + s] for s in SAFETY_TENSORS} if has_head else None,
        gate_sites=sites,
    )


def _expected_tensors(hidden: int, layers: int, gates, n_classes: int | None) -> dict:
    """Tensor name -> (shape, type) of a sidecar of these sizes (``n_classes`` None: no safety head)."""
    from gguf import GGMLQuantizationType

    n, d = hidden // ROTATION_DIM, ROTATION_DIM
    expected: dict[str, tuple[tuple[int, ...], GGMLQuantizationType]] = {}
    for layer in range(layers):
        for gate in gates:
            expected[generators_name(layer, gate)] = ((n, N_GENERATORS), GGMLQuantizationType.F32)
            expected[rotation_name(layer, gate)] = ((n, d, d), GGMLQuantizationType.F64)
    if n_classes is not None:
        shapes = {"0.weight": (hidden, hidden), "0.bias": (hidden,), "2.weight": (n_classes, hidden),
                  "2.bias": (n_classes,)}
        for suffix, shape in shapes.items():
            expected[SAFETY_PREFIX + suffix] = (shape, GGMLQuantizationType.F32)
    return expected


def _read_metadata(reader, path: Path) -> tuple[dict, dict[str, tuple[str, ...]]]:
    """The sidecar's ``so8t.*`` / ``general.*`` keys and its gate sites, checked (``GGUFError``)."""
    meta = {key: _field_value(reader, key, path) for key in _REQUIRED_KEYS}
    for key in reader.fields:
        if key.startswith(("so8t.", "general.")) and key not in meta:
            meta[key] = _field_value(reader, key, path)
    if meta["general.architecture"] != ARCHITECTURE:
        raise GGUFError(
            f"general.architecture is {meta['general.architecture']!r}, expected 'so8t'", path=path
        )
    if int(meta["so8t.format_version"]) != SIDECAR_VERSION:
        raise GGUFError(f"unsupported sidecar format version {meta['so8t.format_version']}", path=path)
    if int(meta["so8t.rotation_dim"]) != ROTATION_DIM:
        raise GGUFError(
            f"so8t.rotation_dim is {meta['so8t.rotation_dim']}, SO8T means {ROTATION_DIM}", path=path
        )
    hidden, layers = int(meta["so8t.embedding_length"]), int(meta["so8t.block_count"])
    if hidden <= 0 or hidden % ROTATION_DIM or layers <= 0:
        raise GGUFError(f"bad sizes: embedding_length {hidden}, block_count {layers}", path=path)
    gates = tuple(meta["so8t.gates"])
    sites = {
        site: tuple(_field_value(reader, f"so8t.gate_sites.{site}", path)) for site in meta["so8t.gate_sites"]
    }
    for site, site_gates in sites.items():
        if not site_gates or set(site_gates) - set(gates):
            raise GGUFError(f"gate site {site!r} lists unknown gates {site_gates}", path=path)
    return meta, sites
