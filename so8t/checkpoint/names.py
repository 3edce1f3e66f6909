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
