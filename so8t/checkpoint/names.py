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


LM_HEAD = "lm_head.weight"


def expected_names(num_layers: int, vision_depth: int, tied: bool) -> list[str]:
    """Every canonical tensor name a complete Qwen2-VL checkpoint has (``lm_head.weight`` only if untied),
    from the tensor table ``so8t.adapters.qwen2vl.TENSORS``."""
    from so8t.adapters.qwen2vl import TENSORS

    names: list[str] = []
    for tower, count in (("text", num_layers), ("vision", vision_depth)):
        facts = [f for f in TENSORS if f.part == tower]
        names += [f.hub for f in facts if not f.per_layer and not f.untied_only]  # globals first
        names += [f.hub.format(i=i) for i in range(count) for f in facts if f.per_layer]
        names += [f.hub for f in facts if f.untied_only and not tied]
    return names


def natural_key(name: str) -> tuple:
    """Sort key that orders ``layers.10`` after ``layers.9``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split("."))
