"""What a generated Qwen2-VL checkpoint looks like: dimensions, layout, and the tensor table.

``TinySpec`` holds every choice a test variant can make. ``tensor_table(spec)`` lists the checkpoint's
tensors (hub names, shapes, init kind) in module order; both the tiny default model and the full-size
replica of Qwen2-VL-2B-Instruct come from this one table, so the replica's parameter count
(2,208,985,600) checks the table against the real model.

Shapes follow ``torch.nn.Linear``: a weight is ``[out_features, in_features]`` (row vectors,
``y = x @ W.T + b``). The patch embedding is a Conv3d weight ``[embed, 3, temporal, patch, patch]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from enum import Enum

from so8t.errors import ConfigError


class Init(str, Enum):
    """How a tensor is initialised (see ``builder``): matrix ~ N(0, std), norm ~ 1 + N(0, s), bias ~ N(0, s)."""

    MATRIX = "matrix"
    NORM_WEIGHT = "norm_weight"
    NORM_BIAS = "norm_bias"
    BIAS = "bias"


DTYPES = ("bfloat16", "float16", "float32")
LAYOUTS = ("hub", "transformers5")


@dataclass(frozen=True)
class TinySpec:
    """A generated Qwen2-VL checkpoint. Defaults: the embedded default model (tied, hub layout, bf16).

    Every matrix row length is a multiple of 256 so K-quants apply; GQA (1 KV head for 2 heads);
    ``mrope_section`` sums to ``head_dim / 2``; vision depth 3 (llama.cpp's converter needs >= 3).
    """

    # text tower
    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    vocab_size: int = 151936
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    mrope_section: tuple[int, ...] = (16, 24, 24)
    # vision tower
    vision_depth: int = 3
    vision_embed_dim: int = 256
    vision_num_heads: int = 4
    vision_mlp_ratio: int = 4
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_chans: int = 3
    # files
    tied: bool = True
    layout: str = "hub"
    shards: int = 2
    dtype: str = "bfloat16"
    seed: int = 0
    tokenizer: bool = True  # False skips the tokenizer files (fast variants for reader tests)
    # initialisation scales
    matrix_std: float = 0.02
    norm_std: float = 0.05
    bias_std: float = 0.02

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.shards < 1:
            raise ConfigError(f"shards must be >= 1, got {self.shards}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError("hidden_size must be divisible by num_attention_heads")
        if 2 * sum(self.mrope_section) != self.head_dim:
            raise ConfigError(
                f"mrope_section {self.mrope_section} must sum to head_dim/2 = {self.head_dim // 2}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def vision_mlp_dim(self) -> int:
        return self.vision_embed_dim * self.vision_mlp_ratio

    @property
    def merger_dim(self) -> int:
        """Width of the patch merger's MLP: ``spatial_merge_size**2`` patches concatenated."""
        return self.vision_embed_dim * self.spatial_merge_size**2

    def replace(self, **changes) -> TinySpec:
        return dataclasses.replace(self, **changes)

    def digest(self) -> str:
        """Short stable hash of every field (cache key for built checkpoints)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @classmethod
    def qwen2vl_2b_instruct(cls, **changes) -> TinySpec:
        """The real shapes of Qwen2-VL-2B-Instruct (docs/reference.md section 2), for the benchmark replica."""
        real = {
            "hidden_size": 1536,
            "intermediate_size": 8960,
            "num_hidden_layers": 28,
            "num_attention_heads": 12,
            "num_key_value_heads": 2,
            "vision_depth": 32,
            "vision_embed_dim": 1280,
            "vision_num_heads": 16,
        }
        return cls(**{**real, **changes})


def text_tensors(spec: TinySpec) -> list[tuple[str, tuple[int, ...], Init]]:
    """Language-model tensors in module order (hub names)."""
    h, kv = spec.hidden_size, spec.num_key_value_heads * spec.head_dim
    q = spec.num_attention_heads * spec.head_dim
    table: list[tuple[str, tuple[int, ...], Init]] = [
        ("model.embed_tokens.weight", (spec.vocab_size, h), Init.MATRIX)
    ]
    for i in range(spec.num_hidden_layers):
        p = f"model.layers.{i}."
        table += [
            (p + "input_layernorm.weight", (h,), Init.NORM_WEIGHT),
            (p + "self_attn.q_proj.weight", (q, h), Init.MATRIX),
            (p + "self_attn.q_proj.bias", (q,), Init.BIAS),
            (p + "self_attn.k_proj.weight", (kv, h), Init.MATRIX),
            (p + "self_attn.k_proj.bias", (kv,), Init.BIAS),
            (p + "self_attn.v_proj.weight", (kv, h), Init.MATRIX),
            (p + "self_attn.v_proj.bias", (kv,), Init.BIAS),
            (p + "self_attn.o_proj.weight", (h, q), Init.MATRIX),
            (p + "post_attention_layernorm.weight", (h,), Init.NORM_WEIGHT),
            (p + "mlp.gate_proj.weight", (spec.intermediate_size, h), Init.MATRIX),
            (p + "mlp.up_proj.weight", (spec.intermediate_size, h), Init.MATRIX),
            (p + "mlp.down_proj.weight", (h, spec.intermediate_size), Init.MATRIX),
        ]
    table.append(("model.norm.weight", (h,), Init.NORM_WEIGHT))
    if not spec.tied:
        table.append(("lm_head.weight", (spec.vocab_size, h), Init.MATRIX))
    return table


def vision_tensors(spec: TinySpec) -> list[tuple[str, tuple[int, ...], Init]]:
    """Vision-tower tensors in module order (hub names)."""
    e, m = spec.vision_embed_dim, spec.vision_mlp_dim
    patch = (e, spec.in_chans, spec.temporal_patch_size, spec.patch_size, spec.patch_size)
    table: list[tuple[str, tuple[int, ...], Init]] = [("visual.patch_embed.proj.weight", patch, Init.MATRIX)]
    for i in range(spec.vision_depth):
        p = f"visual.blocks.{i}."
        table += [
            (p + "norm1.weight", (e,), Init.NORM_WEIGHT),
            (p + "norm1.bias", (e,), Init.NORM_BIAS),
            (p + "norm2.weight", (e,), Init.NORM_WEIGHT),
            (p + "norm2.bias", (e,), Init.NORM_BIAS),
            (p + "attn.qkv.weight", (3 * e, e), Init.MATRIX),
            (p + "attn.qkv.bias", (3 * e,), Init.BIAS),
            (p + "attn.proj.weight", (e, e), Init.MATRIX),
            (p + "attn.proj.bias", (e,), Init.BIAS),
            (p + "mlp.fc1.weight", (m, e), Init.MATRIX),
            (p + "mlp.fc1.bias", (m,), Init.BIAS),
            (p + "mlp.fc2.weight", (e, m), Init.MATRIX),
            (p + "mlp.fc2.bias", (e,), Init.BIAS),
        ]
    md = spec.merger_dim
    table += [
        ("visual.merger.ln_q.weight", (e,), Init.NORM_WEIGHT),
        ("visual.merger.ln_q.bias", (e,), Init.NORM_BIAS),
        ("visual.merger.mlp.0.weight", (md, md), Init.MATRIX),
        ("visual.merger.mlp.0.bias", (md,), Init.BIAS),
        ("visual.merger.mlp.2.weight", (spec.hidden_size, md), Init.MATRIX),
        ("visual.merger.mlp.2.bias", (spec.hidden_size,), Init.BIAS),
    ]
    return table


def tensor_table(spec: TinySpec) -> list[tuple[str, tuple[int, ...], Init]]:
    """All tensors of the checkpoint (hub names), text tower first, then vision."""
    return text_tensors(spec) + vision_tensors(spec)


def num_params(spec: TinySpec) -> int:
    total = 0
    for _, shape, _ in tensor_table(spec):
        n = 1
        for d in shape:
            n *= d
        total += n
    return total
