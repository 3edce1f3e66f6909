"""SO8T sidecar GGUF: gates, rotations and safety head round-trip; malformed files are refused; a
rotation that left SO(8) is loaded and exposed (the validator judges it); the file links to its text GGUF.

Expected values come from the SO8T checkpoint's gates file (read with safetensors here) and from an
independent float64 computation in this file, never from the sidecar writer.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from gguf import GGUFReader, GGUFWriter
from safetensors import safe_open

from so8t import group
from so8t.adapters.qwen2vl import FOLD_SITES, GATE_NAMES
from so8t.errors import ConfigError, GGUFError, So8tError
from so8t.gguf.sidecar import write_sidecar
from so8t.gguf.sidecar_reader import read_sidecar
from suites.fixtures.gguf_extra import FIXTURE_TEXT_HASH

F64_TOL = group.default_tolerance(torch.float64)  # 10 * 8 * eps64, the shared oracle's scale


def _gates_file(so8t_dir) -> dict[str, torch.Tensor]:
    with safe_open(so8t_dir / "so8t_gates.safetensors", framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118 (not a dict)


def _skew(g: np.ndarray) -> np.ndarray:
    """Independent skew builder: upper triangle row by row (i < j), A[j, i] = -A[i, j]."""
    a = np.zeros(g.shape[:-1] + (8, 8))
    k = 0
    for i in range(8):
        for j in range(i + 1, 8):
            a[..., i, j], a[..., j, i] = g[..., k], -g[..., k]
            k += 1
    return a


def test_generators_and_safety_head_round_trip_bit_exact(sidecar_gguf, so8t_random_dir):
    side = read_sidecar(sidecar_gguf)
    gates = _gates_file(so8t_random_dir)
    layers = sum(1 for k in gates if k.endswith(".attn_rot.generators"))
    assert side.num_layers == layers and side.gates == GATE_NAMES
    for layer in range(layers):
        for gate in GATE_NAMES:
            want = gates[f"layers.{layer}.{gate}.generators"].numpy()
            got = side.generators[(layer, gate)]
            assert got.dtype == np.float32 and np.array_equal(got, want), (layer, gate)
    assert side.safety_weights is not None
    for key in ("0.weight", "0.bias", "2.weight", "2.bias"):
        assert np.array_equal(side.safety_weights[key], gates[f"safety_head.{key}"].numpy()), key


def test_rotations_are_exp_of_the_generators_and_in_so8(sidecar_gguf):
    side = read_sidecar(sidecar_gguf)
    assert side.rotation_map == "exp"
    for (layer, gate), r in side.rotations.items():
        assert r.dtype == np.float64 and r.shape == (side.hidden_size // 8, 8, 8)
        want = torch.linalg.matrix_exp(
            torch.from_numpy(_skew(side.generators[(layer, gate)].astype(np.float64)))
        )
        np.testing.assert_allclose(r, want.numpy(), rtol=0, atol=F64_TOL, err_msg=f"{layer}.{gate}")
        assert group.in_so8(torch.from_numpy(r))
    assert side.non_rotations() == []
    # the random-gate fixture really rotates: not every stored rotation is the identity
    assert max(np.abs(r - np.eye(8)).max() for r in side.rotations.values()) > 1e-3


def test_site_rotation_multiplies_gates_in_the_recorded_order(sidecar_gguf):
    side = read_sidecar(sidecar_gguf)
    assert set(side.gate_sites) == {s.name for s in FOLD_SITES}
    for site in FOLD_SITES:
        assert side.gate_sites[site.name] == site.gates
        want = side.rotations[(0, site.gates[0])]
        for gate in site.gates[1:]:
            want = want @ side.rotations[(0, gate)]
        np.testing.assert_array_equal(side.site_rotation(0, site.name), want)


def test_metadata_describes_the_so8t_model_and_links_the_text_file(sidecar_gguf, so8t_random_dir):
    import json

    side = read_sidecar(sidecar_gguf)
    section = json.loads((so8t_random_dir / "config.json").read_text())["so8t"]
    meta = side.metadata
    assert meta["general.architecture"] == "so8t"
    assert meta["so8t.rotation_dim"] == 8 and meta["so8t.group"] == "SO(8)"
    assert meta["so8t.map"] == section["map"]
    assert side.safety_classes == ("ALLOW", "ESCALATE", "REFUSE")
    assert side.text_content_hash == FIXTURE_TEXT_HASH
    assert meta["so8t.source_sha256"] == section["source"]["sha256"]
    assert meta["general.name"] == "so8t-fixture"


def test_safety_head_from_sidecar_matches_an_independent_float64_head(sidecar_gguf):
    side = read_sidecar(sidecar_gguf)
    head = side.safety_head()
    w = {k: v.astype(np.float64) for k, v in side.safety_weights.items()}
    rng = np.random.default_rng(5)
    hidden = rng.standard_normal((3, side.hidden_size))
    z = hidden @ w["0.weight"].T + w["0.bias"]
    gelu = z * 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))  # exact (erf) GELU, nn.GELU()
    want = gelu @ w["2.weight"].T + w["2.bias"]
    # float64 throughout: bound by 4 * hidden * eps64 times the magnitude of the summed terms
    scale = np.abs(gelu) @ np.abs(w["2.weight"]).T + np.abs(w["2.bias"])
    got = head.logits(hidden)
    assert np.all(np.abs(got - want) <= 4 * side.hidden_size * np.finfo(np.float64).eps * (1 + scale))
    got_torch = head.logits(torch.from_numpy(hidden[0]).to(torch.float32))
    assert got_torch.shape == (3,)
    verdict = head.verdict(hidden[1])
    assert verdict.label == ("ALLOW", "ESCALATE", "REFUSE")[int(np.argmax(want[1]))]
    assert math.isclose(sum(verdict.probabilities.values()), 1.0, rel_tol=1e-12)


def _rewrite_rotation(src, dst, layer: int, gate: str, matrix: np.ndarray) -> None:
    """Copy a sidecar and overwrite block 0 of one stored rotation in place (memory-mapped)."""
    shutil.copyfile(src, dst)
    reader = GGUFReader(dst, "r+")
    tensor = next(t for t in reader.tensors if t.name == f"layers.{layer}.{gate}.rotation")
    tensor.data[0] = matrix
    reader.data.flush()
    del reader, tensor


@pytest.mark.parametrize(
    "kind, matrix",
    [
        ("scaled", 1.01 * np.eye(8)),  # not orthogonal
        ("reflection", np.diag([-1.0] + [1.0] * 7)),  # orthogonal, det -1: in O(8) but not SO(8)
        ("nan", np.full((8, 8), np.nan)),
    ],
)
def test_a_rotation_outside_so8_is_loaded_and_exposed(sidecar_gguf, tmp_path, kind, matrix):
    bad = tmp_path / f"{kind}.so8t.gguf"
    _rewrite_rotation(sidecar_gguf, bad, layer=1, gate="attn_safe", matrix=matrix)
    side = read_sidecar(bad)  # Note [no group check on read]: loading succeeds
    found = side.non_rotations()
    assert [(layer, gate) for layer, gate, *_ in found] == [(1, "attn_safe")]
    if kind == "scaled":
        assert found[0][2] == pytest.approx(1.01**2 - 1, rel=1e-9)
    if kind == "reflection":
        assert found[0][2] <= F64_TOL and found[0][3] == pytest.approx(2.0)


def _write_gguf(path, arch: str, keys: dict, tensors: dict) -> None:
    from so8t.gguf.metadata import add_keys

    writer = GGUFWriter(path, arch)
    add_keys(writer, keys)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _copy_of(sidecar, drop=(), retype=None, arch="so8t", change=None):
    """Rebuild a sidecar's keys and tensors with edits, for malformed-file tests."""
    reader = GGUFReader(sidecar)
    keys = {
        k: f.contents()
        for k, f in reader.fields.items()
        if not k.startswith(("GGUF.", "general.architecture"))
    }
    keys.update(change or {})
    tensors = {}
    for t in reader.tensors:
        if t.name in drop:
            continue
        data = np.array(t.data)
        tensors[t.name] = data.astype(retype[1]) if retype and t.name == retype[0] else data
    return arch, keys, tensors


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"arch": "qwen2vl"}, "architecture"),
        ({"drop": ("layers.0.mlp_rot.rotation",)}, "missing"),
        ({"drop": ("safety_head.2.bias",)}, "missing"),
        ({"retype": ("layers.1.attn_rot.rotation", np.float32)}, "F32, expected F64"),
        ({"change": {"so8t.rotation_dim": 4}}, "rotation_dim"),
        ({"change": {"so8t.format_version": 99}}, "format version"),
        ({"change": {"so8t.embedding_length": 12}}, "bad sizes"),
    ],
)
def test_malformed_sidecars_raise_gguf_error(sidecar_gguf, tmp_path, edit, message):
    arch, keys, tensors = _copy_of(sidecar_gguf, **edit)
    path = tmp_path / "bad.so8t.gguf"
    _write_gguf(path, arch, keys, tensors)
    with pytest.raises(GGUFError, match=message):
        read_sidecar(path)


def test_extra_tensor_and_missing_key_raise_gguf_error(sidecar_gguf, tmp_path):
    arch, keys, tensors = _copy_of(sidecar_gguf)
    _write_gguf(tmp_path / "extra.gguf", arch, keys, {**tensors, "stray": np.zeros(3, np.float32)})
    with pytest.raises(GGUFError, match="unexpected"):
        read_sidecar(tmp_path / "extra.gguf")
    del keys["so8t.text_content_hash"]
    _write_gguf(tmp_path / "nokey.gguf", arch, keys, tensors)
    with pytest.raises(GGUFError, match="text_content_hash"):
        read_sidecar(tmp_path / "nokey.gguf")


def test_truncated_missing_and_foreign_files_raise_gguf_error(sidecar_gguf, tmp_path):
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(sidecar_gguf.read_bytes()[: sidecar_gguf.stat().st_size // 2])
    with pytest.raises(GGUFError):
        read_sidecar(truncated)
    with pytest.raises(GGUFError, match="not found"):
        read_sidecar(tmp_path / "absent.gguf")
    (tmp_path / "text.txt").write_text("not a gguf")
    with pytest.raises(GGUFError, match="not a readable GGUF"):
        read_sidecar(tmp_path / "text.txt")


def test_write_refuses_a_plain_checkpoint_and_an_empty_hash(source_checkpoint, so8t_random_dir, tmp_path):
    with pytest.raises(ConfigError, match="not an SO8T checkpoint"):
        write_sidecar(source_checkpoint, tmp_path / "s.gguf", FIXTURE_TEXT_HASH)
    with pytest.raises(So8tError, match="content hash"):
        write_sidecar(so8t_random_dir, tmp_path / "s.gguf", "")
    assert list(tmp_path.iterdir()) == []


def test_identity_conversion_has_identity_rotations_and_no_head(so8t_identity_dir, tmp_path):
    side = read_sidecar(write_sidecar(so8t_identity_dir, tmp_path / "id.so8t.gguf", FIXTURE_TEXT_HASH))
    assert side.safety_weights is None and side.safety_head() is None
    for r in side.rotations.values():
        np.testing.assert_array_equal(r, np.broadcast_to(np.eye(8), r.shape))


def test_exported_sidecar_links_to_its_text_file(gguf_text):
    """The orchestrator writes the sidecar with the text file's content hash, recomputable from the file."""
    from so8t.gguf.metadata import content_hash_of_file

    text_out = gguf_text["F16"]
    side = read_sidecar(text_out.sidecar)
    assert side.text_content_hash == content_hash_of_file(text_out.path)  # recomputed from the tensors
