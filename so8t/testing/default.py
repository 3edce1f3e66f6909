"""The embedded default checkpoint, built once per machine into a cache directory.

``default_checkpoint()`` returns ``<cache>/qwen2-vl-tiny-<variant>-b<BUILDER_VERSION>-<spec digest>``,
building it first if absent. The cache is ``$SO8T_CACHE_DIR`` or ``~/.cache/so8t``. The directory name
carries the builder version and a digest of the spec, so changing either builds a fresh directory
instead of reusing stale bytes. A file lock serialises concurrent builders (several test processes on one
machine); the build itself goes through ``so8t.io.atomic_path``, so a reader never sees half a checkpoint.
A cached directory missing any of its files (deleted by hand) is rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from so8t.errors import So8tError
from so8t.testing.builder import INDEX_NAME, build_checkpoint, shard_plan
from so8t.testing.spec import TinySpec

#: Bump when the builder's output bytes change (tokenizer files, config keys, weight init).
BUILDER_VERSION = 1

VARIANTS: dict[str, TinySpec] = {
    "tied": TinySpec(),
    "untied": TinySpec(tied=False),
    # A checkpoint shaped the way users' checkpoints differ from ours (docs/reference.md section 13): untied,
    # tokenizer.json only, chat template only in chat_template.json, hidden and FFN sizes that are multiples
    # of 128 but not of 256 (llama.cpp's K-quant mixes fall back on those rows), 6 heads over 2 KV heads.
    "user-like": TinySpec(
        tied=False, bpe_files=False, chat_template_in="json", hidden_size=384, intermediate_size=1152,
        num_attention_heads=6, num_key_value_heads=2, mrope_section=(8, 12, 12), vision_embed_dim=192,
        vision_num_heads=3,
    ),
    # The chat template only in chat_template.jinja (transformers 5), otherwise the default model.
    "jinja": TinySpec(chat_template_in="jinja"),
}


def cache_dir() -> Path:
    """``$SO8T_CACHE_DIR`` or ``~/.cache/so8t`` (created if needed)."""
    root = Path(os.environ.get("SO8T_CACHE_DIR") or Path.home() / ".cache" / "so8t").expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise So8tError(f"cannot create the cache directory: {err.strerror}", path=root) from err
    return root


def default_spec(variant: str = "tied") -> TinySpec:
    try:
        return VARIANTS[variant]
    except KeyError:
        raise So8tError(
            f"unknown default checkpoint variant {variant!r}; choose from {sorted(VARIANTS)}"
        ) from None


def default_checkpoint_name(variant: str = "tied") -> str:
    return f"qwen2-vl-tiny-{variant}-b{BUILDER_VERSION}-{default_spec(variant).digest()}"


@contextlib.contextmanager
def _locked(lock_path: Path):
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def expected_files(spec: TinySpec) -> set[str]:
    """File names a build of ``spec`` leaves in its directory."""
    template = "chat_template.jinja" if spec.chat_template_in == "jinja" else "chat_template.json"
    names = {"config.json", "generation_config.json", "preprocessor_config.json", template}
    names |= {file_name for file_name, _ in shard_plan(spec)}
    if spec.shards > 1:
        names.add(INDEX_NAME)
    if spec.tokenizer:
        names |= {"tokenizer.json", "tokenizer_config.json"}
        if spec.bpe_files:
            names |= {"vocab.json", "merges.txt"}
    return names


def _complete(path: Path, spec: TinySpec) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in expected_files(spec))


def default_checkpoint(variant: str = "tied") -> Path:
    """Path of the embedded default Qwen2-VL checkpoint (hub layout, bf16, two shards), built on demand.

    ``variant``: ``"tied"`` (default; no ``lm_head.weight``, like Qwen2-VL-2B-Instruct) or ``"untied"``.
    """
    spec = default_spec(variant)
    root = cache_dir()
    final = root / default_checkpoint_name(variant)
    if _complete(final, spec):
        return final
    with _locked(root / f".{final.name}.lock"):
        if not _complete(final, spec):  # another process may have built it meanwhile; or a file was deleted
            build_checkpoint(final, spec)
    return final
