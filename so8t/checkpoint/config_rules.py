"""config.json held against the tensors a checkpoint's safetensors headers list (no data is read).

The config implies the whole inventory: every tensor of ``so8t.adapters.qwen2vl.TENSORS`` for its layer
count, vision depth and tying, each with the shape its sizes give and, when config.json states one
(``torch_dtype`` / ``dtype``), that storage dtype. Rules, checked in this order:

1. every implied tensor is present (``CheckpointError`` naming the index or shard: the files are
   incomplete);
2. no tensor is present that the config does not imply (``ConfigError``: e.g. a layer beyond
   ``num_hidden_layers``, ``lm_head.weight`` with ``tie_word_embeddings`` true);
3. every tensor has the implied shape (``ConfigError`` naming the fields the shape comes from);
4. every tensor has the stated dtype (``ConfigError`` naming ``torch_dtype``).

Errors of rules 2-4 name config.json as the file, the field, and the shard holding the tensor, in one line.
"""

from __future__ import annotations

import re
from pathlib import Path

from so8t.errors import CheckpointError, ConfigError

_INDEXED = re.compile(r"^(model\.layers|visual\.blocks)\.(\d+)\.")


def check_tensors(config, entries: dict, where: Path) -> None:
    """Apply the rules of the module docstring; ``config`` is a ``ModelConfig``, ``entries`` maps each
    canonical tensor name to its ``TensorEntry``, ``where`` is the file named for missing tensors."""
    from so8t.adapters.qwen2vl import expand

    text, vision = config.text, config.vision
    tied = text.tie_word_embeddings
    implied = {
        name: (shape, fact)
        for name, shape, fact in expand(config.sizes, text.num_hidden_layers, vision.depth, tied)
    }
    _check_missing(implied, entries, where, tied)
    for name, entry in entries.items():
        if name not in implied:
            raise ConfigError(
                f"{_why_not_implied(name, config)}, but {_file(entry)} holds {name}", path=config.path
            )
    for name, (shape, fact) in implied.items():
        entry = entries[name]
        if tuple(entry.shape) != shape:
            from so8t.adapters.qwen2vl import SYMBOL_FIELDS

            fields = [SYMBOL_FIELDS[s] for s, want, got in zip(fact.shape, shape, entry.shape) if want != got]
            if len(entry.shape) != len(shape):
                fields = [SYMBOL_FIELDS[s] for s in fact.shape]
            raise ConfigError(
                f"{', '.join(dict.fromkeys(fields))} give {name} the shape {shape}, "
                f"but {_file(entry)} holds {tuple(entry.shape)}",
                path=config.path,
            )
        if config.dtype is not None and entry.dtype != config.dtype:
            raise ConfigError(
                f"torch_dtype is {config.dtype}, but {_file(entry)} holds {name} as {entry.dtype}",
                path=config.path,
            )


def _file(entry) -> str:
    return Path(entry.file).name


def _check_missing(implied: dict, entries: dict, where: Path, tied: bool) -> None:
    missing = [n for n in implied if n not in entries]
    if not missing:
        return
    hint = (
        " (tie_word_embeddings is false, so lm_head.weight is needed)" if "lm_head.weight" in missing else ""
    )
    raise CheckpointError(
        f"{len(missing)} tensors of the Qwen2-VL model are missing, e.g. {missing[:3]}{hint}", path=where
    )


def _why_not_implied(name: str, config) -> str:
    """Which field leaves no place for tensor ``name``."""
    from so8t.adapters.qwen2vl import TENSORS

    match = _INDEXED.match(name)
    if match and match.group(1) == "model.layers" and int(match.group(2)) >= config.text.num_hidden_layers:
        return f"num_hidden_layers is {config.text.num_hidden_layers}"
    if match and match.group(1) == "visual.blocks" and int(match.group(2)) >= config.vision.depth:
        return f"vision_config.depth is {config.vision.depth}"
    if any(f.hub == name and f.untied_only for f in TENSORS):
        return "tie_word_embeddings is true"
    return "no field of a Qwen2-VL config implies such a tensor"
