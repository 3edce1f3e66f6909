"""Tensor-name spellings of Qwen2-VL checkpoints, as a data table.

Two spellings exist on disk:

* **hub** (canonical here): what Qwen2-VL-2B-Instruct ships and what ``CheckpointReader.names()`` returns:
  ``model.embed_tokens.weight``, ``model.layers.N.*``, ``model.norm.weight``, ``lm_head.weight``,
  ``visual.*``;
* **transformers5**: how transformers 5.x names the modules in memory (and writes them with
  ``save_pretrained``): ``model.language_model.*``, ``model.visual.*``, ``lm_head.weight``.

Only prefixes differ; the rest of a name is the same in both layouts.
"""

from __future__ import annotations

#: (hub prefix, transformers-5 prefix); the first matching row wins.
PREFIXES: tuple[tuple[str, str], ...] = (
    ("visual.", "model.visual."),
    ("model.", "model.language_model."),
    ("lm_head.", "lm_head."),
)

LAYOUT_HUB = "hub"
LAYOUT_TRANSFORMERS5 = "transformers5"

_TF5_ONLY = tuple(tf5 for hub, tf5 in PREFIXES if hub != tf5)


def to_transformers5(name: str) -> str:
    """Hub name -> transformers-5 name (names outside the table are returned unchanged)."""
    for hub, tf5 in PREFIXES:
        if name.startswith(hub):
            return tf5 + name[len(hub) :]
    return name


def to_hub(name: str) -> str:
    """Any spelling -> canonical hub name (hub names are returned unchanged)."""
    for hub, tf5 in PREFIXES:
        if tf5 != hub and name.startswith(tf5):
            return hub + name[len(tf5) :]
    return name


def detect_layout(names) -> str:
    """``"transformers5"`` if any name uses a transformers-5-only prefix, else ``"hub"``."""
    return LAYOUT_TRANSFORMERS5 if any(n.startswith(_TF5_ONLY) for n in names) else LAYOUT_HUB


def is_text(name: str) -> bool:
    """True for language-model tensors (canonical names)."""
    return name.startswith(("model.", "lm_head."))


def is_vision(name: str) -> bool:
    """True for vision-tower tensors (canonical names)."""
    return name.startswith("visual.")


#: Per-layer tensors of the language model (suffixes after ``model.layers.N.``).
TEXT_LAYER_SUFFIXES: tuple[str, ...] = (
    "input_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.q_proj.bias",
    "self_attn.k_proj.weight",
    "self_attn.k_proj.bias",
    "self_attn.v_proj.weight",
    "self_attn.v_proj.bias",
    "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
)
#: Per-block tensors of the vision tower (suffixes after ``visual.blocks.N.``).
VISION_BLOCK_SUFFIXES: tuple[str, ...] = (
    "norm1.weight",
    "norm1.bias",
    "norm2.weight",
    "norm2.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)
TEXT_GLOBAL: tuple[str, ...] = ("model.embed_tokens.weight", "model.norm.weight")
VISION_GLOBAL: tuple[str, ...] = (
    "visual.patch_embed.proj.weight",
    "visual.merger.ln_q.weight",
    "visual.merger.ln_q.bias",
    "visual.merger.mlp.0.weight",
    "visual.merger.mlp.0.bias",
    "visual.merger.mlp.2.weight",
    "visual.merger.mlp.2.bias",
)
LM_HEAD = "lm_head.weight"


def expected_names(num_layers: int, vision_depth: int, tied: bool) -> list[str]:
    """Every canonical tensor name a complete Qwen2-VL checkpoint has (``lm_head.weight`` only if untied)."""
    names = list(TEXT_GLOBAL)
    names += [f"model.layers.{i}.{s}" for i in range(num_layers) for s in TEXT_LAYER_SUFFIXES]
    if not tied:
        names.append(LM_HEAD)
    names += list(VISION_GLOBAL)
    names += [f"visual.blocks.{i}.{s}" for i in range(vision_depth) for s in VISION_BLOCK_SUFFIXES]
    return names


def natural_key(name: str) -> tuple:
    """Sort key that orders ``layers.10`` after ``layers.9``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split("."))
