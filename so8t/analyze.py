"""Model analysis (``so8t analyze``): architecture, sizes and parameter counts of a Qwen2-VL checkpoint.

Everything comes from config.json and the safetensors headers; no tensor data is read, so analysing a
4.4 GB checkpoint takes milliseconds. Tied embeddings are counted once (the files hold no lm_head).
An SO8T checkpoint is analysed too: its gate and safety-head parameters are reported separately.
"""

from __future__ import annotations

import math
from pathlib import Path

from so8t.checkpoint import CheckpointReader
from so8t.checkpoint import names as nm
from so8t.tables import format_table, human_bytes

GATES_FILE = "so8t_gates.safetensors"


def _count(reader: CheckpointReader, predicate) -> int:
    return sum(math.prod(reader.shape(n)) for n in reader.names() if predicate(n))


def analyze_checkpoint(path: str | Path) -> dict:
    """A JSON-ready dict describing the checkpoint at ``path`` (raises ``So8tError`` on a broken one)."""
    reader = CheckpointReader(path)
    text, vision = reader.text_config, reader.vision_config
    files = sorted({reader.path / "config.json", *reader.shard_files, *reader.aux_files})
    result = {
        "path": str(reader.path),
        "architecture": (reader.config.get("architectures") or ["?"])[0],
        "model_type": reader.config.get("model_type"),
        "layout": reader.layout,
        "dtype": str(reader.dtype).removeprefix("torch."),
        "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size,
        "num_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads,
        "vocab_size": text.vocab_size,
        "max_position_embeddings": text.max_position_embeddings,
        "tie_word_embeddings": reader.tied,
        "vision_depth": vision.depth,
        "vision_embed_dim": vision.embed_dim,
        "params_text": _count(reader, nm.is_text),
        "params_vision": _count(reader, nm.is_vision),
        "files": {f.name: f.stat().st_size for f in files},
        "total_bytes": sum(f.stat().st_size for f in files),
    }
    result["params_total"] = result["params_text"] + result["params_vision"]
    so8t = reader.config.get("so8t")
    if so8t is not None:
        gates = Path(path) / GATES_FILE
        result["so8t"] = {
            "version": so8t.get("version"),
            "map": so8t.get("map"),
            "gate_sites": so8t.get("gate_sites"),
            "gates_file_bytes": gates.stat().st_size if gates.is_file() else None,
        }
    reader.close()
    return result


def format_analysis(result: dict) -> str:
    """The analysis as a two-column table."""
    rows = [
        ("architecture", f"{result['architecture']} ({result['model_type']}, {result['layout']} names)"),
        ("dtype", result["dtype"]),
        ("hidden size", result["hidden_size"]),
        ("intermediate size", result["intermediate_size"]),
        ("layers", result["num_layers"]),
        ("attention heads / KV heads", f"{result['num_attention_heads']} / {result['num_key_value_heads']}"),
        ("vocab size", result["vocab_size"]),
        ("max positions", result["max_position_embeddings"]),
        ("tied embeddings", result["tie_word_embeddings"]),
        ("vision depth / embed dim", f"{result['vision_depth']} / {result['vision_embed_dim']}"),
        ("parameters (text)", f"{result['params_text']:,}"),
        ("parameters (vision)", f"{result['params_vision']:,}"),
        ("parameters (total)", f"{result['params_total']:,}"),
    ]
    if "so8t" in result:
        rows.append(("SO8T", f"version {result['so8t']['version']}, map {result['so8t']['map']}"))
    rows += [(f"file {name}", human_bytes(size)) for name, size in result["files"].items()]
    rows.append(("files total", human_bytes(result["total_bytes"])))
    return format_table(("property", "value"), rows)
