"""mmproj GGUF (vision tower for llama.cpp's multimodal loader): metadata, inventory, lossless round trip.

What llama.cpp needs is written here as data, read from its sources (``tools/mtmd/clip-impl.h`` key and
tensor names, ``clip.cpp`` ``load_hparams`` / ``load_tensors`` for ``PROJECTOR_TYPE_QWEN2VL``,
``models/qwen2vl.cpp`` for what the graph uses and asserts absent). Expected values come from the
checkpoint's config and tensors, never from the writer.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType

from so8t.errors import ConfigError, ExportError
from so8t.gguf.hparams import VisionHParams
from so8t.gguf.vision import write_mmproj

#: Keys clip.cpp reads unconditionally for a vision mmproj (a missing one aborts the load), with type.
REQUIRED_KEYS: dict[str, GGUFValueType] = {
    "general.architecture": GGUFValueType.STRING,
    "clip.projector_type": GGUFValueType.STRING,
    "clip.has_vision_encoder": GGUFValueType.BOOL,
    "clip.vision.embedding_length": GGUFValueType.UINT32,
    "clip.vision.attention.head_count": GGUFValueType.UINT32,
    "clip.vision.feed_forward_length": GGUFValueType.UINT32,
    "clip.vision.block_count": GGUFValueType.UINT32,
    "clip.vision.projection_dim": GGUFValueType.UINT32,
    "clip.vision.attention.layer_norm_epsilon": GGUFValueType.FLOAT32,
    "clip.vision.image_size": GGUFValueType.UINT32,
    "clip.vision.patch_size": GGUFValueType.UINT32,
    "clip.vision.image_mean": GGUFValueType.ARRAY,
    "clip.vision.image_std": GGUFValueType.ARRAY,
}
#: Global tensors the qwen2vl_merger path loads (patch halves, merger norm as post_ln, mm.0 / mm.2).
GLOBAL_TENSORS = (
    "v.patch_embd.weight",
    "v.patch_embd.weight.1",
    "v.post_ln.weight",
    "v.post_ln.bias",
    "mm.0.weight",
    "mm.0.bias",
    "mm.2.weight",
    "mm.2.bias",
)
#: Per-block tensors (``v.blk.N.<suffix>``) the qwen2vl graph uses: LayerNorms with bias, split q/k/v.
BLOCK_TENSORS = (
    "ln1.weight",
    "ln1.bias",
    "ln2.weight",
    "ln2.bias",
    "attn_q.weight",
    "attn_q.bias",
    "attn_k.weight",
    "attn_k.bias",
    "attn_v.weight",
    "attn_v.bias",
    "attn_out.weight",
    "attn_out.bias",
    "ffn_up.weight",
    "ffn_up.bias",
    "ffn_down.weight",
    "ffn_down.bias",
)
#: The qwen2vl graph asserts these are absent.
FORBIDDEN_TENSORS = ("v.patch_embd.bias", "v.class_embd")
FILE_TYPES = {"f32": (GGMLQuantizationType.F32, 0), "f16": (GGMLQuantizationType.F16, 1)}

F16_UNIT_ROUNDOFF = 2.0**-11  # round to nearest, 11-bit significand
F16_SUBNORMAL_HALF_STEP = 2.0**-25  # half the spacing of F16 subnormals (absolute floor)


def _fields(path) -> dict:
    reader = GGUFReader(path)
    return {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def _expected_sources(vision: dict) -> dict[str, tuple[str, callable]]:
    """mmproj name -> (canonical source, how the piece is cut out of it), written out independently."""
    e = vision["embed_dim"]
    out = {
        "v.patch_embd.weight": ("visual.patch_embed.proj.weight", lambda t: t[:, :, 0]),
        "v.patch_embd.weight.1": ("visual.patch_embed.proj.weight", lambda t: t[:, :, 1]),
    }
    for kind in ("weight", "bias"):
        out[f"v.post_ln.{kind}"] = (f"visual.merger.ln_q.{kind}", lambda t: t)
        out[f"mm.0.{kind}"] = (f"visual.merger.mlp.0.{kind}", lambda t: t)
        out[f"mm.2.{kind}"] = (f"visual.merger.mlp.2.{kind}", lambda t: t)
        for n in range(vision["depth"]):
            b = f"visual.blocks.{n}"
            out[f"v.blk.{n}.ln1.{kind}"] = (f"{b}.norm1.{kind}", lambda t: t)
            out[f"v.blk.{n}.ln2.{kind}"] = (f"{b}.norm2.{kind}", lambda t: t)
            out[f"v.blk.{n}.attn_out.{kind}"] = (f"{b}.attn.proj.{kind}", lambda t: t)
            out[f"v.blk.{n}.ffn_up.{kind}"] = (f"{b}.mlp.fc1.{kind}", lambda t: t)
            out[f"v.blk.{n}.ffn_down.{kind}"] = (f"{b}.mlp.fc2.{kind}", lambda t: t)
            out[f"v.blk.{n}.attn_q.{kind}"] = (f"{b}.attn.qkv.{kind}", lambda t: t[:e])
            out[f"v.blk.{n}.attn_k.{kind}"] = (f"{b}.attn.qkv.{kind}", lambda t: t[e : 2 * e])
            out[f"v.blk.{n}.attn_v.{kind}"] = (f"{b}.attn.qkv.{kind}", lambda t: t[2 * e :])
    return out


@pytest.mark.parametrize("dtype", ["f16", "f32"])
def test_metadata_has_every_key_the_clip_loader_reads(mmproj_gguf, source_reader, dtype):
    fields = _fields(mmproj_gguf[dtype])
    for key, vtype in REQUIRED_KEYS.items():
        assert key in fields, f"missing {key}"
        assert fields[key].types[0] == vtype, f"{key} has type {fields[key].types}"
    v, text = source_reader.vision_config, source_reader.text_config
    pre = source_reader.preprocessor_config
    from transformers.models.qwen2_vl.modeling_qwen2_vl import PatchMerger

    transformers_eps = PatchMerger(dim=8, context_dim=8).ln_q.eps  # hard-coded in transformers, not in config
    value = {k: f.contents() for k, f in fields.items()}
    assert value["general.architecture"] == "clip"
    assert value["general.type"] == "mmproj"
    assert value["general.file_type"] == FILE_TYPES[dtype][1]
    assert value["clip.projector_type"] == "qwen2vl_merger"
    assert value["clip.has_vision_encoder"] is True
    assert value["clip.vision.embedding_length"] == v["embed_dim"]
    assert value["clip.vision.attention.head_count"] == v["num_heads"]
    assert value["clip.vision.block_count"] == v["depth"]
    assert value["clip.vision.feed_forward_length"] == v["embed_dim"] * v["mlp_ratio"]
    assert value["clip.vision.projection_dim"] == text["hidden_size"]  # llama.cpp checks it against the LLM
    assert value["clip.vision.patch_size"] == v["patch_size"]
    assert value["clip.vision.spatial_merge_size"] == v["spatial_merge_size"]
    assert value["clip.vision.attention.layer_norm_epsilon"] == pytest.approx(transformers_eps, rel=2**-23)
    np.testing.assert_allclose(value["clip.vision.image_mean"], pre["image_mean"], rtol=2**-23)
    np.testing.assert_allclose(value["clip.vision.image_std"], pre["image_std"], rtol=2**-23)
    # quick GELU (transformers' default for the Qwen2-VL vision MLP) is what clip.cpp runs without a flag
    assert v["hidden_act"] == "quick_gelu"
    assert "clip.use_gelu" not in value and "clip.use_silu" not in value


@pytest.mark.parametrize("dtype", ["f16", "f32"])
def test_tensor_inventory_names_shapes_types(mmproj_gguf, source_reader, dtype):
    reader = GGUFReader(mmproj_gguf[dtype])
    tensors = {t.name: t for t in reader.tensors}
    v = source_reader.vision_config
    expected = set(GLOBAL_TENSORS) | {f"v.blk.{n}.{s}" for n in range(v["depth"]) for s in BLOCK_TENSORS}
    assert set(tensors) == expected  # nothing missing, nothing extra
    assert not set(FORBIDDEN_TENSORS) & set(tensors)
    e, f, p, c = v["embed_dim"], v["embed_dim"] * v["mlp_ratio"], v["patch_size"], v["in_channels"]
    m, d = e * v["spatial_merge_size"] ** 2, source_reader.text_config["hidden_size"]
    shapes = {
        "v.patch_embd.weight": (e, c, p, p),
        "v.patch_embd.weight.1": (e, c, p, p),
        "v.post_ln.weight": (e,),
        "v.post_ln.bias": (e,),
        "mm.0.weight": (m, m),
        "mm.0.bias": (m,),
        "mm.2.weight": (d, m),
        "mm.2.bias": (d,),
    }
    block = {
        "attn_q": (e, e),
        "attn_k": (e, e),
        "attn_v": (e, e),
        "attn_out": (e, e),
        "ffn_up": (f, e),
        "ffn_down": (e, f),
        "ln1": (e, None),
        "ln2": (e, None),
    }
    for n in range(v["depth"]):
        for mod, (rows, cols) in block.items():
            shapes[f"v.blk.{n}.{mod}.weight"] = (rows,) if cols is None else (rows, cols)
            shapes[f"v.blk.{n}.{mod}.bias"] = (rows,)
    matrix_type = FILE_TYPES[dtype][0]
    for name, t in tensors.items():
        assert tuple(int(x) for x in reversed(t.shape)) == shapes[name], name  # GGUF stores ne0 first
        want = GGMLQuantizationType.F32 if len(shapes[name]) == 1 else matrix_type
        assert t.tensor_type == want, f"{name} is {t.tensor_type.name}"


@pytest.mark.parametrize("dtype", ["f16", "f32"])
def test_round_trip_equals_the_source_tensors(mmproj_gguf, source_reader, dtype):
    """F32: bit-exact (bf16/f16/f32 sources widen exactly). F16: one rounding, |err| <= 2^-11 |x| + 2^-25."""
    reader = GGUFReader(mmproj_gguf[dtype])
    sources = _expected_sources(source_reader.vision_config)
    loaded: tuple[str, torch.Tensor] | None = None  # one source tensor at a time (the qkv parts are adjacent)
    for t in reader.tensors:
        source, cut = sources[t.name]
        if loaded is None or loaded[0] != source:
            loaded = None  # free the previous one first
            loaded = (source, source_reader.get(source).to(torch.float64))
        want = cut(loaded[1]).numpy()
        got = np.asarray(t.data, dtype=np.float64)
        assert got.shape == want.shape, t.name
        if t.tensor_type == GGMLQuantizationType.F32 and source_reader.dtype != torch.float64:
            np.testing.assert_array_equal(got, want, err_msg=t.name)
        else:
            f16 = t.tensor_type == GGMLQuantizationType.F16
            unit, floor = (F16_UNIT_ROUNDOFF, F16_SUBNORMAL_HALF_STEP) if f16 else (2.0**-24, 2.0**-150)
            bound = unit * np.abs(want) + floor
            excess = np.abs(got - want) - bound
            assert excess.max() <= 0, f"{t.name}: error exceeds the F16 rounding bound by {excess.max():g}"


def test_f16_overflow_is_refused_and_leaves_no_file(monkeypatch, embedded_random_dir, tmp_path):
    """The writer's range check, on the embedded model on any gate (at Qwen2-VL-2B size the F32 file it then
    writes is 2.7 GB)."""
    from so8t.checkpoint import CheckpointReader

    real_get = CheckpointReader.get

    def huge(self, name):
        t = real_get(self, name)
        return t.float() * 1e6 if name.endswith("mlp.fc1.weight") else t

    monkeypatch.setattr(CheckpointReader, "get", huge)
    out = tmp_path / "mm.gguf"
    with pytest.raises(ExportError, match="F16 range"):
        write_mmproj(embedded_random_dir, out, dtype="f16")
    assert list(tmp_path.iterdir()) == []
    write_mmproj(embedded_random_dir, out, dtype="f32")  # F32 holds such values: written
    assert out.is_file()


def test_interrupted_write_keeps_the_old_file_and_leaves_no_partial(monkeypatch, so8t_random_dir, tmp_path):
    from so8t.checkpoint import CheckpointReader

    out = tmp_path / "mm.gguf"
    out.write_bytes(b"previous")
    real_get, calls = CheckpointReader.get, []

    def interrupted(self, name):
        calls.append(name)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_get(self, name)

    monkeypatch.setattr(CheckpointReader, "get", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_mmproj(so8t_random_dir, out, dtype="f16")
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["mm.gguf"]


def test_missing_preprocessor_config_is_a_config_error(tmp_checkpoint, tmp_path):
    ckpt = tmp_checkpoint()
    (ckpt / "preprocessor_config.json").unlink()
    with pytest.raises(ConfigError, match="preprocessor_config.json"):
        write_mmproj(ckpt, tmp_path / "mm.gguf")
    assert not (tmp_path / "mm.gguf").exists()


def test_unknown_dtype_is_refused(so8t_random_dir, tmp_path):
    with pytest.raises(ExportError, match="dtype"):
        write_mmproj(so8t_random_dir, tmp_path / "mm.gguf", dtype="q8_0")


BASE_VISION = {"depth": 3, "embed_dim": 256, "num_heads": 4, "mlp_ratio": 4, "hidden_size": 256}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"temporal_patch_size": 3}, "temporal_patch_size"),
        ({"num_heads": 3}, "not divisible by num_heads 3"),  # 256 / 3 is not whole
        ({"embed_dim": 8 * 6, "num_heads": 8}, "head size"),  # head size 6 is not a multiple of 4
        ({"hidden_size": 512}, "differs from the text hidden size"),
        ({"hidden_act": "relu"}, "no llama.cpp equivalent"),
        ({"depth": None}, "depth"),
    ],
)
def test_vision_configs_llama_cpp_cannot_run_are_config_errors(tmp_path, change, message):
    vision = {**BASE_VISION, **change}
    vision = {k: val for k, val in vision.items() if val is not None}
    with pytest.raises(ConfigError, match=message):
        VisionHParams.from_configs(vision, {"hidden_size": 256}, tmp_path / "config.json")
