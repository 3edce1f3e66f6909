"""What a generated Qwen2-VL checkpoint looks like: dimensions, layout, and the tensor table.

``TinySpec`` holds every choice a test variant can make. ``tensor_table(spec)`` lists the checkpoint's
tensors (hub names, shapes, init kind) in module order, evaluated from the project's one table of
Qwen2-VL tensor facts (``so8t.adapters.qwen2vl.TENSORS``); both the tiny default model and the full-size
replica of Qwen2-VL-2B-Instruct come from it, so the replica's parameter count
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
CHAT_TEMPLATE_PLACES = ("both", "json", "jinja")


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
    # False writes the tokenizer as tokenizer.json + tokenizer_config.json only, without the slow-tokenizer
    # files vocab.json / merges.txt (as many hub checkpoints ship it)
    bpe_files: bool = True
    # where the chat template lives: "both" (tokenizer_config.json and chat_template.json, as shipped),
    # "json" (chat_template.json only, the hub layout), "jinja" (chat_template.jinja only, transformers 5)
    chat_template_in: str = "both"
    # initialisation scales
    matrix_std: float = 0.02
    norm_std: float = 0.05
    bias_std: float = 0.02

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.chat_template_in not in CHAT_TEMPLATE_PLACES:
            raise ConfigError(f"chat_template_in must be one of {CHAT_TEMPLATE_PLACES}, got {self.chat_template_in!r}")
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


def _sizes(spec: TinySpec) -> dict[str, int]:
    """Values of the shape symbols of ``so8t.adapters.qwen2vl.TENSORS`` for ``spec``."""
    return {
        "vocab": spec.vocab_size,
        "hidden": spec.hidden_size,
        "ffn": spec.intermediate_size,
        "q": spec.num_attention_heads * spec.head_dim,
        "kv": spec.num_key_value_heads * spec.head_dim,
        "embed": spec.vision_embed_dim,
        "qkv": 3 * spec.vision_embed_dim,
        "vffn": spec.vision_mlp_dim,
        "merger": spec.merger_dim,
        "channels": spec.in_chans,
        "temporal": spec.temporal_patch_size,
        "patch": spec.patch_size,
    }


def _init(name: str, kind: str) -> Init:
    if kind == "matrix":
        return Init.MATRIX
    if kind == "norm":
        return Init.NORM_BIAS if name.endswith(".bias") else Init.NORM_WEIGHT
    return Init.BIAS


def _tensors(spec: TinySpec, part: str) -> list[tuple[str, tuple[int, ...], Init]]:
    from so8t.adapters.qwen2vl import expand

    rows = expand(_sizes(spec), spec.num_hidden_layers, spec.vision_depth, spec.tied, part=part)
    return [(name, shape, _init(name, fact.kind)) for name, shape, fact in rows]


def text_tensors(spec: TinySpec) -> list[tuple[str, tuple[int, ...], Init]]:
    """Language-model tensors in module order (hub names), from the Qwen2-VL tensor table."""
    return _tensors(spec, "text")


def vision_tensors(spec: TinySpec) -> list[tuple[str, tuple[int, ...], Init]]:
    """Vision-tower tensors in module order (hub names), from the Qwen2-VL tensor table."""
    return _tensors(spec, "vision")


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
