"""Build a Qwen2-VL checkpoint directory from a ``TinySpec``, in the hub's on-disk layout.

Files written (the set Qwen2-VL-2B-Instruct ships): ``config.json``, the safetensors shard(s)
(``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``, or ``model.safetensors`` for
one shard), ``generation_config.json``, ``preprocessor_config.json``, ``chat_template.json``,
``tokenizer.json``, ``tokenizer_config.json``, ``vocab.json``, ``merges.txt``.

Weights are deterministic: each tensor has its own ``torch.Generator`` seeded from
``sha256(f"{spec.seed}:{hub_name}")``, so a tensor's values do not depend on the layout, the shard
split, or the other tensors, and every build gives identical bytes. Values are drawn in float32 and cast
once to ``spec.dtype``: matrices ``N(0, matrix_std)``, norm weights ``1 + N(0, norm_std)``, biases
``N(0, bias_std)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from so8t.checkpoint.names import to_transformers5
from so8t.errors import ConfigError
from so8t.io import atomic_path
from so8t.testing import tokenizer as tok
from so8t.testing.safetensors_stream import nbytes, write_streaming
from so8t.testing.spec import Init, TinySpec, tensor_table

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

#: Qwen2-VL image processor settings (preprocessor_config.json of Qwen2-VL-2B-Instruct; CLIP mean/std).
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]
MIN_PIXELS = 3136
MAX_PIXELS = 12845056


def tensor_seed(seed: int, hub_name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{hub_name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_tensor(spec: TinySpec, hub_name: str, shape: Sequence[int], init: Init) -> torch.Tensor:
    """The float32 values of one tensor (independent of every other tensor)."""
    gen = torch.Generator().manual_seed(tensor_seed(spec.seed, hub_name))
    noise = torch.randn(tuple(shape), generator=gen, dtype=torch.float32)
    if init is Init.MATRIX:
        return noise.mul_(spec.matrix_std)
    if init is Init.NORM_WEIGHT:
        return noise.mul_(spec.norm_std).add_(1.0)
    if init is Init.NORM_BIAS:
        return noise.mul_(spec.norm_std)
    return noise.mul_(spec.bias_std)


def shard_plan(spec: TinySpec) -> list[tuple[str, list[tuple[str, tuple[int, ...], Init]]]]:
    """Split the tensor table, in module order, into ``spec.shards`` files; each new file takes about its
    fair share of the bytes not yet placed (a tensor is never split)."""
    table = tensor_table(spec)
    if spec.shards == 1:
        return [(SINGLE_NAME, table)]
    sizes = [nbytes(shape, spec.dtype) for _, shape, _ in table]
    groups: list[list] = [[]]
    filled, unassigned = 0, sum(sizes)
    for entry, size in zip(table, sizes):
        budget = unassigned / (spec.shards - len(groups) + 1)  # fair share of what is left
        if groups[-1] and filled + size > budget and len(groups) < spec.shards:
            groups.append([])
            unassigned -= filled
            filled = 0
        groups[-1].append(entry)
        filled += size
    if len(groups) != spec.shards:
        raise ConfigError(f"cannot split {len(table)} tensors into {spec.shards} non-empty shards")
    n = spec.shards
    return [(f"model-{i + 1:05d}-of-{n:05d}.safetensors", group) for i, group in enumerate(groups)]


def _disk_name(spec: TinySpec, hub_name: str) -> str:
    return to_transformers5(hub_name) if spec.layout == "transformers5" else hub_name


def hub_config(spec: TinySpec) -> dict:
    """config.json as Qwen2-VL-2B-Instruct ships it (legacy ``rope_scaling`` with ``mrope``)."""
    return {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": tok.SPECIAL_IDS["<|endoftext|>"],
        "eos_token_id": tok.SPECIAL_IDS["<|im_end|>"],
        "vision_start_token_id": tok.SPECIAL_IDS["<|vision_start|>"],
        "vision_end_token_id": tok.SPECIAL_IDS["<|vision_end|>"],
        "vision_token_id": tok.SPECIAL_IDS["<|vision_pad|>"],
        "image_token_id": tok.SPECIAL_IDS["<|image_pad|>"],
        "video_token_id": tok.SPECIAL_IDS["<|video_pad|>"],
        "hidden_act": "silu",
        "hidden_size": spec.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": spec.intermediate_size,
        "max_position_embeddings": spec.max_position_embeddings,
        "max_window_layers": spec.num_hidden_layers,
        "model_type": "qwen2_vl",
        "num_attention_heads": spec.num_attention_heads,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_key_value_heads": spec.num_key_value_heads,
        "rms_norm_eps": spec.rms_norm_eps,
        "rope_theta": spec.rope_theta,
        "sliding_window": spec.max_position_embeddings,
        "tie_word_embeddings": spec.tied,
        "torch_dtype": spec.dtype,
        "transformers_version": "4.45.0.dev0",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            "depth": spec.vision_depth,
            "embed_dim": spec.vision_embed_dim,
            "mlp_ratio": spec.vision_mlp_ratio,
            "num_heads": spec.vision_num_heads,
            "in_chans": spec.in_chans,
            "hidden_size": spec.hidden_size,
            "patch_size": spec.patch_size,
            "spatial_merge_size": spec.spatial_merge_size,
            "spatial_patch_size": spec.patch_size,
            "temporal_patch_size": spec.temporal_patch_size,
        },
        "rope_scaling": {"type": "mrope", "mrope_section": list(spec.mrope_section)},
        "vocab_size": spec.vocab_size,
    }


def transformers5_config(spec: TinySpec) -> dict:
    """config.json in the nested form transformers 5 writes (``text_config``, ``rope_parameters``)."""
    hub = hub_config(spec)
    text_keys = [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "hidden_act",
        "max_position_embeddings",
        "initializer_range",
        "rms_norm_eps",
        "use_cache",
        "use_sliding_window",
        "max_window_layers",
        "attention_dropout",
        "bos_token_id",
        "eos_token_id",
    ]
    text = {"model_type": "qwen2_vl_text", **{k: hub[k] for k in text_keys}}
    text["sliding_window"] = None
    text["rope_parameters"] = {
        "rope_type": "default",
        "mrope_section": list(spec.mrope_section),
        "rope_theta": spec.rope_theta,
    }
    vision = {k: v for k, v in hub["vision_config"].items() if k not in ("in_chans", "spatial_patch_size")}
    vision = {
        "model_type": "qwen2_vl_vision",
        "hidden_act": "quick_gelu",
        "in_channels": spec.in_chans,
        **vision,
    }
    root_keys = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return {
        "architectures": hub["architectures"],
        "model_type": "qwen2_vl",
        "dtype": spec.dtype,
        **{k: hub[k] for k in root_keys},
        "tie_word_embeddings": spec.tied,
        "text_config": text,
        "vision_config": vision,
        "transformers_version": "5.24.0",
    }


def generation_config() -> dict:
    return {
        "bos_token_id": tok.SPECIAL_IDS["<|endoftext|>"],
        "pad_token_id": tok.SPECIAL_IDS["<|endoftext|>"],
        "do_sample": True,
        "eos_token_id": [tok.SPECIAL_IDS["<|im_end|>"], tok.SPECIAL_IDS["<|endoftext|>"]],
        "repetition_penalty": 1.0,
        "temperature": 0.01,
        "top_p": 0.001,
        "top_k": 1,
        "transformers_version": "4.37.0",
    }


def preprocessor_config(spec: TinySpec) -> dict:
    return {
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "patch_size": spec.patch_size,
        "temporal_patch_size": spec.temporal_patch_size,
        "merge_size": spec.spatial_merge_size,
        "image_mean": IMAGE_MEAN,
        "image_std": IMAGE_STD,
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
    }


def write_weights(out_dir: Path, spec: TinySpec, on_tensor=None, values=None) -> None:
    """Write the shard file(s) and, for several shards, the index (weight_map sorted by name).
    ``values(hub_name, shape)``: a tensor's float32 values, or None for the random ones of
    :func:`make_tensor` (the real-weights checkpoint, so8t/testing/real_weights.py, gives its text tower)."""
    weight_map: dict[str, str] = {}
    total = 0
    for file_name, group in shard_plan(spec):
        by_disk = {_disk_name(spec, name): (name, init) for name, _, init in group}

        def make(disk_name: str, shape: Sequence[int], by_disk=by_disk) -> torch.Tensor:
            hub_name, init = by_disk[disk_name]
            given = values(hub_name, shape) if values is not None else None
            return make_tensor(spec, hub_name, shape, init) if given is None else given

        entries = [(_disk_name(spec, name), shape) for name, shape, _ in group]
        total += write_streaming(
            out_dir / file_name, entries, spec.dtype, make, metadata={"format": "pt"}, on_tensor=on_tensor
        )
        weight_map.update({disk_name: file_name for disk_name, _ in entries})
    if spec.shards > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        tok.dump_json(index, out_dir / INDEX_NAME)


def write_checkpoint_files(out_dir: Path, spec: TinySpec, on_tensor=None, values=None) -> None:
    """Write every file of the checkpoint into the existing directory ``out_dir`` (``values``: see
    :func:`write_weights`)."""
    config = transformers5_config(spec) if spec.layout == "transformers5" else hub_config(spec)
    tok.dump_json(config, out_dir / "config.json")
    tok.dump_json(generation_config(), out_dir / "generation_config.json")
    tok.dump_json(preprocessor_config(spec), out_dir / "preprocessor_config.json")
    if spec.chat_template_in == "jinja":
        (out_dir / "chat_template.jinja").write_text(tok.CHAT_TEMPLATE, encoding="utf-8")
    else:
        tok.dump_json({"chat_template": tok.CHAT_TEMPLATE}, out_dir / "chat_template.json")
    if spec.tokenizer:
        tok.write_tokenizer_files(out_dir, model_max_length=spec.max_position_embeddings,
                                  template_in_config=spec.chat_template_in == "both", bpe_files=spec.bpe_files)
    write_weights(out_dir, spec, on_tensor=on_tensor, values=values)


def build_checkpoint(out_dir: str | Path, spec: TinySpec | None = None) -> Path:
    """Build the checkpoint described by ``spec`` (default: the embedded default model) at ``out_dir``.

    Atomic: the directory appears complete or not at all; an existing ``out_dir`` is replaced.

    Example:
        >>> build_checkpoint(tmp_path / "ckpt", TinySpec(layout="transformers5", shards=1, dtype="float32"))
    """
    spec = spec or TinySpec()
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        write_checkpoint_files(tmp, spec)
    return out_dir
