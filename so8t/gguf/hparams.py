"""The hyper-parameters llama.cpp reads: ``qwen2vl`` from a text GGUF (``TextHParams``), and the
``qwen2vl_merger`` vision tower from an mmproj (``VisionHParams``).

A view of the typed text config (``so8t.checkpoint.config.TextConfig``, the one parse of config.json and
the only defaults) in llama.cpp's terms: ``TextHParams.from_text``; ``add_to`` writes the keys
(docs/reference.md section 3), with ``rope.dimension_sections`` as an INT32 array of exactly 4.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from gguf import GGUFWriter

from so8t.errors import ConfigError
from so8t.gguf import vision_names as names

DEFAULT_IMAGE_SIZE = 560  # so8t/gguf/vision.py, Note [image size]
TEMPORAL_PATCH_SIZE = 2  # llama.cpp splits the Conv3d into exactly two Conv2d kernels


@dataclass(frozen=True)
class TextHParams:
    """The hyper-parameters llama.cpp reads for ``qwen2vl``."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    context_length: int
    rms_norm_eps: float
    rope_theta: float
    mrope_section: tuple[int, int, int, int]
    tied: bool

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads

    @property
    def dims(self) -> dict[str, int]:
        return {
            "vocab": self.vocab_size,
            "hidden": self.hidden_size,
            "ffn": self.intermediate_size,
            "q": self.n_heads * self.head_dim,
            "kv": self.n_kv_heads * self.head_dim,
        }

    @classmethod
    def from_text(cls, text, path: str | Path = "config.json") -> TextHParams:
        """From the typed text config (``so8t.checkpoint.config.TextConfig``); ``path`` names config.json
        in errors. llama.cpp reads exactly 4 M-RoPE sections, so mrope_section is padded with 0."""
        section = list(text.mrope_section)
        if len(section) > 4:
            raise ConfigError(f"mrope_section must have 1 to 4 entries, got {section!r}", path=path)
        return cls(
            vocab_size=text.vocab_size,
            hidden_size=text.hidden_size,
            intermediate_size=text.intermediate_size,
            n_layers=text.num_hidden_layers,
            n_heads=text.num_attention_heads,
            n_kv_heads=text.num_key_value_heads,
            context_length=text.max_position_embeddings,
            rms_norm_eps=text.rms_norm_eps,
            rope_theta=text.rope_theta,
            mrope_section=tuple(section + [0] * (4 - len(section))),
            tied=text.tie_word_embeddings,
        )

    @classmethod
    def from_config(cls, config: dict, path: str | Path = "config.json") -> TextHParams:
        """From a ``config.json`` dict (either spelling), parsed and validated by
        ``so8t.checkpoint.config.parse_text`` (the one place with defaults)."""
        from so8t.checkpoint.config import parse_text

        return cls.from_text(parse_text(config, Path(path)), path)

    def add_to(self, writer: GGUFWriter) -> None:
        writer.add_context_length(self.context_length)
        writer.add_embedding_length(self.hidden_size)
        writer.add_block_count(self.n_layers)
        writer.add_feed_forward_length(self.intermediate_size)
        writer.add_head_count(self.n_heads)
        writer.add_head_count_kv(self.n_kv_heads)
        writer.add_layer_norm_rms_eps(self.rms_norm_eps)
        writer.add_rope_freq_base(self.rope_theta)
        writer.add_rope_dimension_sections([int(s) for s in self.mrope_section])


@dataclass(frozen=True)
class VisionHParams:
    """The vision tower's shape, read from config.json (and checked against the tensors while writing)."""

    embed_dim: int
    depth: int
    num_heads: int
    ffn_dim: int
    patch_size: int
    in_channels: int
    spatial_merge_size: int
    projection_dim: int
    image_size: int
    hidden_act: str
    layer_norm_eps: float

    @classmethod
    def from_vision(cls, vision, path: Path) -> VisionHParams:
        """From the typed vision config (``so8t.checkpoint.config.VisionConfig``, already validated),
        refusing what llama.cpp's ``qwen2vl_merger`` cannot run; ``path`` names config.json."""
        embed_dim, heads = vision.embed_dim, vision.num_heads
        if vision.temporal_patch_size != TEMPORAL_PATCH_SIZE:
            raise ConfigError(
                f"temporal_patch_size {vision.temporal_patch_size} is not supported (llama.cpp's "
                "qwen2vl_merger needs 2)",
                path=path,
            )
        if (embed_dim // heads) % 4:
            raise ConfigError(
                f"vision embed_dim {embed_dim} / num_heads {heads} must give a head size divisible by 4 "
                "(llama.cpp's vision M-RoPE splits each head in four sections)",
                path=path,
            )
        if vision.hidden_act not in names.ACTIVATION_KEYS:
            raise ConfigError(
                f"vision hidden_act {vision.hidden_act!r} has no llama.cpp equivalent", path=path
            )
        return cls(
            embed_dim=embed_dim,
            depth=vision.depth,
            num_heads=heads,
            ffn_dim=vision.ffn_dim,
            patch_size=vision.patch_size,
            in_channels=vision.in_channels,
            spatial_merge_size=vision.spatial_merge_size,
            projection_dim=vision.hidden_size,
            image_size=vision.image_size or DEFAULT_IMAGE_SIZE,
            hidden_act=vision.hidden_act,
            layer_norm_eps=vision.layer_norm_eps,
        )

    @classmethod
    def from_configs(cls, vision: dict, text: dict, path: Path) -> VisionHParams:
        """From a ``vision_config`` dict and the text hidden size (``text["hidden_size"]``), parsed by
        ``so8t.checkpoint.config.parse_vision`` (the one place with defaults)."""
        from so8t.checkpoint.config import parse_vision

        return cls.from_vision(parse_vision(vision, Path(path), int(text["hidden_size"])), Path(path))

    def source_shape(self, source: str) -> tuple[int, ...]:
        """The shape a canonical ``visual.*`` tensor must have (from ``so8t.adapters.qwen2vl.TENSORS``)."""
        return self._shapes[source]

    @functools.cached_property
    def _shapes(self) -> dict[str, tuple[int, ...]]:
        from so8t.adapters.qwen2vl import expand, vision_dims

        rows = expand(vision_dims(self), 0, self.depth, True, part="vision")
        return {name: shape for name, shape, _ in rows}

    hidden_size = property(lambda self: self.projection_dim, doc="merger output width (text hidden size)")
    temporal_patch_size = property(lambda self: TEMPORAL_PATCH_SIZE, doc="llama.cpp's two Conv2d halves")
