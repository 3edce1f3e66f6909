"""The hyper-parameters llama.cpp's ``qwen2vl`` architecture reads from a text GGUF (``TextHParams``).

A view of the typed text config (``so8t.checkpoint.config.TextConfig``, the one parse of config.json and
the only defaults) in llama.cpp's terms: ``TextHParams.from_text``; ``add_to`` writes the keys
(docs/reference.md section 3), with ``rope.dimension_sections`` as an INT32 array of exactly 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gguf import GGUFWriter

from so8t.errors import ConfigError


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
