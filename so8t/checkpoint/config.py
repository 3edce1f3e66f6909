"""config.json of a Qwen2-VL checkpoint, parsed and validated once into one typed config.

``read_config(directory)`` loads config.json, refuses remote code and other architectures, and parses
it into a :class:`ModelConfig` (``.text``: :class:`TextConfig`, ``.vision``: :class:`VisionConfig`).
Every consumer (the reader, the converter, the text and mmproj writers, the validator) receives this
object; the defaults for absent keys live here and only here (:data:`TEXT_DEFAULTS`,
:data:`VISION_DEFAULTS`, transformers' own). :mod:`so8t.checkpoint.config_rules` then holds the config
against the tensors the safetensors headers list.

Two spellings exist. The hub file (what Qwen2-VL-2B-Instruct ships) keeps the text hyper-parameters at
the root, with ``rope_theta`` at the root and M-RoPE as legacy ``rope_scaling: {"type": "mrope",
"mrope_section": [...]}``. transformers 5 nests them under ``text_config`` with ``rope_parameters``
(``rope_theta`` and ``mrope_section`` inside), while ``tie_word_embeddings`` stays at the root. A nested
value wins over a root one (docs/reference.md section 6).

Rules (each a one-line ``ConfigError`` naming the field and config.json; ``HiddenSizeError`` for a hidden
size SO(8) blocks cannot split): integer sizes and counts are integers > 0; ``rms_norm_eps``,
``rope_theta`` and the vision ``layer_norm_eps`` are finite and > 0; heads divide the hidden size and KV
heads divide heads; ``mrope_section`` sums to head_dim / 2; the vision heads divide ``embed_dim``; the
merger output (``vision_config.hidden_size``) is the text hidden size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from so8t.errors import ConfigError, HiddenSizeError, UnsafeCheckpointError
from so8t.group import ROTATION_DIM

CONFIG_NAME = "config.json"
ARCHITECTURE = "Qwen2VLForConditionalGeneration"
MODEL_TYPE = "qwen2_vl"

#: transformers' defaults where a key may be absent (Qwen2VLTextConfig / PreTrainedConfig).
TEXT_DEFAULTS = {
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
TEXT_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
              "max_position_embeddings")
#: Vision defaults of Qwen2VLVisionConfig. LayerNorm eps is hard-coded to 1e-6 in transformers' vision tower.
VISION_DEFAULTS = {
    "mlp_ratio": 4,
    "in_channels": 3,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-6,
    "image_size": None,
}
VISION_REQUIRED = ("depth", "embed_dim", "num_heads")
VISION_SIZES = VISION_REQUIRED + ("in_channels", "patch_size", "spatial_merge_size", "temporal_patch_size")


class _Fields:
    """Read access by field name (``config["hidden_size"]``) besides attributes, for callers that index."""

    def __getitem__(self, key: str):
        if key not in {f.name for f in fields(self)}:
            raise KeyError(key)
        return getattr(self, key)


@dataclass(frozen=True)
class TextConfig(_Fields):
    """The text tower's hyper-parameters."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    mrope_section: tuple[int, ...]
    tie_word_embeddings: bool
    hidden_act: str
    bos_token_id: object
    eos_token_id: object


@dataclass(frozen=True)
class VisionConfig(_Fields):
    """The vision tower's hyper-parameters (``in_chans`` is spelled ``in_channels``; ``hidden_size`` is
    the merger's output width; ``image_size`` is None when config.json names none)."""

    depth: int
    embed_dim: int
    num_heads: int
    mlp_ratio: int | float  # as config.json spells it (transformers' vision config wants an int there)
    in_channels: int
    patch_size: int
    spatial_merge_size: int
    temporal_patch_size: int
    hidden_act: str
    layer_norm_eps: float
    hidden_size: int
    image_size: int | None

    @property
    def ffn_dim(self) -> int:
        return int(self.embed_dim * float(self.mlp_ratio))


@dataclass(frozen=True)
class ModelConfig:
    """A parsed config.json: ``raw`` (the JSON object, unmodified), ``path`` (the file), the two towers,
    and ``dtype`` (the storage dtype config.json states, a torch dtype name, or None)."""

    raw: dict
    path: Path
    text: TextConfig
    vision: VisionConfig
    dtype: str | None

    @property
    def sizes(self) -> dict[str, int]:
        """The shape symbols of ``so8t.adapters.qwen2vl.TENSORS`` evaluated for this model."""
        from so8t.adapters.qwen2vl import dims

        return dims(self.text, self.vision)


def load_config(directory: Path) -> dict:
    """Read ``directory/config.json``; ConfigError if it is missing, not JSON, or not an object."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ConfigError(
            "config.json not found", path=path, hint="a Hugging Face checkpoint directory has a config.json"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"invalid JSON at line {err.lineno} column {err.colno}: {err.msg}", path=path
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read config.json: {err}", path=path) from err
    if not isinstance(config, dict):
        raise ConfigError("config.json is not a JSON object", path=path)
    return config


def check_supported(config: dict, path: Path) -> None:
    """Refuse remote code and anything but Qwen2-VL (``path`` is the config file, for messages)."""
    if "auto_map" in config or config.get("trust_remote_code"):
        raise UnsafeCheckpointError(
            "config.json asks for trust_remote_code (auto_map): loading it would run code from the checkpoint",
            path=path,
            hint="use a checkpoint of the stock transformers Qwen2-VL architecture",
        )
    architectures = config.get("architectures") or []
    if not isinstance(architectures, list):
        raise ConfigError("'architectures' must be a list", path=path)
    model_type = config.get("model_type")
    if ARCHITECTURE in architectures or (not architectures and model_type == MODEL_TYPE):
        return
    found = ", ".join(map(str, architectures)) or f"model_type {model_type!r}"
    raise ConfigError(
        f"architecture {found} is not Qwen2-VL ({ARCHITECTURE})",
        path=path,
        hint="so8t converts Qwen2-VL checkpoints only",
    )


def read_config(directory: str | Path) -> ModelConfig:
    """load_config + check_supported + parse_config of ``directory/config.json``."""
    raw = load_config(Path(directory))
    path = Path(directory) / CONFIG_NAME
    check_supported(raw, path)
    return parse_config(raw, path)


def parse_config(raw: dict, path: Path) -> ModelConfig:
    """The typed, validated config of a config.json object (``path`` names the file in errors)."""
    text = parse_text(raw, path)
    vision = parse_vision(raw.get("vision_config"), path, text.hidden_size)
    nested = raw.get("text_config") or {}
    dtype = nested.get("dtype") or nested.get("torch_dtype") or raw.get("dtype") or raw.get("torch_dtype")
    return ModelConfig(raw, Path(path), text, vision, str(dtype) if dtype else None)


def _rope(section: dict) -> dict:
    """rope settings from ``rope_parameters`` (transformers 5) or legacy ``rope_scaling`` (hub)."""
    out = {}
    for key in ("rope_scaling", "rope_parameters"):
        params = section.get(key)
        if isinstance(params, dict):
            if "mrope_section" in params:
                out["mrope_section"] = params["mrope_section"]
            if "rope_theta" in params:
                out["rope_theta"] = params["rope_theta"]
    if "rope_theta" in section:
        out.setdefault("rope_theta", section["rope_theta"])
    return out


def _positive_int(values: dict, key: str, path: Path, where: str) -> int:
    value = values.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where} has no integer {key!r}", path=path)
    if value <= 0:
        raise ConfigError(f"{where} {key} is {value}; it must be > 0", path=path)
    return value


def _positive_float(values: dict, key: str, path: Path, where: str) -> float:
    value = values.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:
        raise ConfigError(f"{where} {key} is {value!r}; it must be a finite number > 0", path=path)
    return float(value)


def parse_text(config: dict, path: Path) -> TextConfig:
    """The text tower of a config.json object (either spelling), validated (see the module docstring)."""
    nested = config.get("text_config") or {}
    if not isinstance(nested, dict):
        raise ConfigError("'text_config' must be an object", path=path)
    merged = {**TEXT_DEFAULTS, **config, **_rope(config), **nested, **_rope(nested)}
    if "tie_word_embeddings" in config:  # the root value is the one transformers 5 honours
        merged["tie_word_embeddings"] = config["tie_word_embeddings"]
    size = {key: _positive_int(merged, key, path, "text config") for key in TEXT_SIZES}
    hidden, heads = size["hidden_size"], size["num_attention_heads"]
    merged.setdefault("num_key_value_heads", heads)
    merged["num_key_value_heads"] = merged["num_key_value_heads"] or heads
    kv = _positive_int(merged, "num_key_value_heads", path, "text config")
    if hidden % ROTATION_DIM:
        raise HiddenSizeError(
            f"hidden_size {hidden} is not divisible by {ROTATION_DIM}, so it cannot be split into SO(8) blocks",
            path=path,
        )
    if hidden % heads or heads % kv:
        raise ConfigError(f"hidden_size {hidden}, {heads} heads, {kv} KV heads are inconsistent", path=path)
    merged.setdefault("head_dim", hidden // heads)
    head_dim = _positive_int(merged, "head_dim", path, "text config")
    section = merged.get("mrope_section")
    if not (isinstance(section, list) and section and all(isinstance(s, int) for s in section)):
        raise ConfigError("no M-RoPE mrope_section in rope_scaling / rope_parameters", path=path)
    if 2 * sum(section) != head_dim or min(section) < 0:
        raise ConfigError(f"mrope_section {section} must sum to head_dim/2 = {head_dim // 2}", path=path)
    return TextConfig(
        num_key_value_heads=kv,
        head_dim=head_dim,
        rms_norm_eps=_positive_float(merged, "rms_norm_eps", path, "text config"),
        rope_theta=_positive_float(merged, "rope_theta", path, "text config"),
        mrope_section=tuple(section),
        tie_word_embeddings=bool(merged["tie_word_embeddings"]),
        hidden_act=str(merged["hidden_act"]),
        bos_token_id=merged["bos_token_id"],
        eos_token_id=merged["eos_token_id"],
        **size,
    )


def parse_vision(vision, path: Path, text_hidden: int) -> VisionConfig:
    """The vision tower of ``config["vision_config"]``, validated; ``text_hidden`` is the text hidden
    size, the merger output's default and required value."""
    if not isinstance(vision, dict):
        raise ConfigError("config.json has no vision_config object", path=path)
    merged = {**VISION_DEFAULTS, **vision}
    if "in_chans" in vision and "in_channels" not in vision:
        merged["in_channels"] = vision["in_chans"]
    merged.setdefault("hidden_size", text_hidden)
    size = {key: _positive_int(merged, key, path, "vision_config") for key in VISION_SIZES}
    if size["embed_dim"] % size["num_heads"]:
        raise ConfigError(
            f"vision embed_dim {size['embed_dim']} is not divisible by num_heads {size['num_heads']}",
            path=path,
        )
    merger_out = _positive_int(merged, "hidden_size", path, "vision_config")
    if merger_out != text_hidden:
        raise ConfigError(
            f"vision_config.hidden_size {merger_out} (merger output) differs from the text hidden size "
            f"{text_hidden}; the image embeddings must match the text model",
            path=path,
        )
    _positive_float(merged, "mlp_ratio", path, "vision_config")
    image_size = merged["image_size"]
    return VisionConfig(
        mlp_ratio=merged["mlp_ratio"],  # validated above, kept as spelled
        hidden_act=str(merged["hidden_act"]),
        layer_norm_eps=_positive_float(merged, "layer_norm_eps", path, "vision_config"),
        hidden_size=merger_out,
        image_size=None if image_size is None else _positive_int(merged, "image_size", path, "vision_config"),
        **size,
    )

