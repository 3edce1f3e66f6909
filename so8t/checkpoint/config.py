"""config.json of a Qwen2-VL checkpoint: loading, safety and support checks, normalised views.

Two spellings exist. The hub file (what Qwen2-VL-2B-Instruct ships) keeps the text hyper-parameters at
the root, with ``rope_theta`` at the root and M-RoPE as legacy ``rope_scaling: {"type": "mrope",
"mrope_section": [...]}``. transformers 5 nests them under ``text_config`` with ``rope_parameters``
(``rope_theta`` and ``mrope_section`` inside), while ``tie_word_embeddings`` stays at the root.
``text_config()`` and ``vision_config()`` give one flat dict whatever the spelling; a nested value wins
over a root one.
"""

from __future__ import annotations

import json
from pathlib import Path

from so8t.errors import ConfigError, HiddenSizeError, UnsafeCheckpointError

CONFIG_NAME = "config.json"
ARCHITECTURE = "Qwen2VLForConditionalGeneration"
MODEL_TYPE = "qwen2_vl"
ROTATION_DIM = 8

#: transformers' defaults where a key may be absent (Qwen2VLTextConfig / PreTrainedConfig).
TEXT_DEFAULTS = {
    "rope_theta": 1_000_000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
    "hidden_act": "silu",
    "bos_token_id": 151643,
    "eos_token_id": 151645,
}
TEXT_REQUIRED = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "vocab_size",
    "max_position_embeddings",
)
#: Vision defaults of Qwen2VLVisionConfig. LayerNorm eps is hard-coded to 1e-6 in transformers' vision tower.
VISION_DEFAULTS = {
    "mlp_ratio": 4,
    "in_channels": 3,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-6,
}
VISION_REQUIRED = ("depth", "embed_dim", "num_heads")


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


def text_config(config: dict, path: Path) -> dict:
    """Flat text hyper-parameters; checks hidden % 8, heads, and that mrope_section sums to head_dim/2."""
    nested = config.get("text_config") or {}
    if not isinstance(nested, dict):
        raise ConfigError("'text_config' must be an object", path=path)
    merged = {**TEXT_DEFAULTS, **config, **_rope(config), **nested, **_rope(nested)}
    merged.pop("text_config", None)
    merged.pop("vision_config", None)
    if "tie_word_embeddings" in config:  # the root value is the one transformers 5 honours
        merged["tie_word_embeddings"] = config["tie_word_embeddings"]
    for key in TEXT_REQUIRED:
        if not isinstance(merged.get(key), int) or isinstance(merged.get(key), bool):
            raise ConfigError(f"text config has no integer {key!r}", path=path)
    heads = merged["num_attention_heads"]
    merged["num_key_value_heads"] = int(merged.get("num_key_value_heads") or heads)
    hidden = merged["hidden_size"]
    if hidden <= 0 or hidden % ROTATION_DIM:
        raise HiddenSizeError(
            f"hidden_size {hidden} is not divisible by {ROTATION_DIM}, so it cannot be split into SO(8) blocks",
            path=path,
        )
    if heads <= 0 or hidden % heads or heads % merged["num_key_value_heads"]:
        raise ConfigError(
            f"hidden_size {hidden}, {heads} heads, {merged['num_key_value_heads']} KV heads are inconsistent",
            path=path,
        )
    merged.setdefault("head_dim", hidden // heads)
    section = merged.get("mrope_section")
    if not (isinstance(section, list) and section and all(isinstance(s, int) for s in section)):
        raise ConfigError("no M-RoPE mrope_section in rope_scaling / rope_parameters", path=path)
    if 2 * sum(section) != merged["head_dim"]:
        raise ConfigError(
            f"mrope_section {section} must sum to head_dim/2 = {merged['head_dim'] // 2}", path=path
        )
    merged["rope_theta"] = float(merged["rope_theta"])
    merged["rms_norm_eps"] = float(merged["rms_norm_eps"])
    merged["tie_word_embeddings"] = bool(merged["tie_word_embeddings"])
    return merged


def vision_config(config: dict, path: Path, text_hidden: int | None = None) -> dict:
    """Flat vision hyper-parameters (``in_chans`` spelled ``in_channels``; merger output ``hidden_size``)."""
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        raise ConfigError("config.json has no vision_config object", path=path)
    merged = {**VISION_DEFAULTS, **vision}
    if "in_chans" in vision and "in_channels" not in vision:
        merged["in_channels"] = vision["in_chans"]
    for key in VISION_REQUIRED:
        if not isinstance(merged.get(key), int) or isinstance(merged.get(key), bool):
            raise ConfigError(f"vision_config has no integer {key!r}", path=path)
    if text_hidden is not None:
        merged.setdefault("hidden_size", text_hidden)
    if merged["embed_dim"] % merged["num_heads"]:
        raise ConfigError(
            f"vision embed_dim {merged['embed_dim']} is not divisible by num_heads {merged['num_heads']}",
            path=path,
        )
    return merged
