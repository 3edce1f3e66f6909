"""SO8T sidecar GGUF: the gate generators, their rotations and the safety head, next to the text GGUF.

The text GGUF has the gates folded into its weights and may hold no extra tensor (llama.cpp refuses
unknown tensors), so everything SO8T-specific that a reader may want back lives here. llama.cpp does not
run this file (``general.architecture = "so8t"``); ``so8t.gguf.sidecar_reader`` and the validator do.

Tensors (names as in the SO8T gates file, so one spelling serves both):

* ``layers.{i}.{gate}.generators`` ``[hidden/8, 28]`` F32, copied bit for bit from the gates file;
* ``layers.{i}.{gate}.rotation`` ``[hidden/8, 8, 8]`` F64, ``R = map(A(generators))`` computed in float64;
* optional ``safety_head.0.weight`` ``[hidden, hidden]``, ``safety_head.0.bias``, ``safety_head.2.weight``
  ``[3, hidden]``, ``safety_head.2.bias`` F32.

Conventions: row vectors, a gate acts as ``y_blk = x_blk @ R_blk``; a site's gates multiply in the order
``so8t.gate_sites.<site>`` lists them (``x @ R_rot @ R_safe @ R_cmd`` for the attention output).

Metadata: ``so8t.format_version`` (of this sidecar layout), ``so8t.checkpoint_version``, ``so8t.rotation_dim`` (8),
``so8t.group`` ("SO(8)"), ``so8t.map``, ``so8t.parametrisation``, ``so8t.block_count``,
``so8t.embedding_length``, ``so8t.gates``, ``so8t.gate_sites`` and ``so8t.gate_sites.<site>``,
``so8t.safety_head``, ``so8t.safety_classes``, ``so8t.safety_head.activation``,
``so8t.text_content_hash`` (the text GGUF's ``so8t.content_hash``: the link), ``so8t.source_model``,
``so8t.source_sha256`` (same names as the text file's keys); ``so8t.safety_head.trained`` (true only for a
head ``so8t train`` trained: steps > 0, a safety weight > 0 and labelled data),
``so8t.safety_head.train_data_sha256`` (sha256 of the training file, "" when untrained) and
``so8t.safety_head.eval_metrics`` (the final eval metrics as JSON, "" when none).

Note [no group check on read]: ``sidecar_reader.read_sidecar`` refuses a malformed file (wrong
architecture, missing or misshapen tensors, bad keys) with ``GGUFError`` but loads rotations that are
not in SO(8): judging them is the validator's job, and ``Sidecar.non_rotations`` exposes them through
``so8t.group.in_so8``.
"""

from __future__ import annotations

from pathlib import Path

from so8t.checkpoint.so8t_dir import gate_key
from so8t.errors import So8tError
from so8t.gguf.metadata import source_model_name
from so8t.io import atomic_path
from so8t.safety import STATE_PREFIX

ARCHITECTURE = "so8t"
GGUF_TYPE = "so8t-sidecar"
SIDECAR_VERSION = 1
SAFETY_ACTIVATION = "gelu_erf"  # torch.nn.GELU() default: x * Phi(x), exact erf form
SAFETY_TENSORS = ("0.weight", "0.bias", "2.weight", "2.bias")
SAFETY_PREFIX = STATE_PREFIX  # the gates file's prefix (so8t.safety), one spelling for both files
generators_name = gate_key  # the gates file's tensor name (so8t.checkpoint.so8t_dir.gate_key)


def rotation_name(layer: int, gate: str) -> str:
    return f"layers.{layer}.{gate}.rotation"


def _add_training_keys(writer, training: dict, has_head: bool) -> None:
    """Whether the head was trained, on which data, and its eval metrics (from config.json's so8t.training)."""
    import json

    trained = bool(has_head and training.get("safety_head_trained"))
    writer.add_bool("so8t.safety_head.trained", trained)
    data = training.get("train_data") or {}
    writer.add_string("so8t.safety_head.train_data_sha256", str(data.get("sha256", "")) if trained else "")
    metrics = training.get("eval_metrics")
    writer.add_string("so8t.safety_head.eval_metrics", json.dumps(metrics, sort_keys=True) if metrics else "")


def write_sidecar(
    so8t_dir: str | Path, out_path: str | Path, text_content_hash: str, model_name: str | None = None
) -> Path:
    """Write the sidecar GGUF of the SO8T checkpoint ``so8t_dir`` to ``out_path`` (atomically).

    ``text_content_hash`` is the content hash of the text GGUF this sidecar belongs to (as
    ``so8t.gguf.metadata`` computes it); it is stored verbatim as ``so8t.text_content_hash``.
    """
    import gguf

    from so8t.checkpoint.so8t_dir import SO8TCheckpoint

    if not isinstance(text_content_hash, str) or not text_content_hash:
        raise So8tError("the text GGUF content hash must be a non-empty string", path=out_path)
    ckpt = SO8TCheckpoint(so8t_dir)
    head = ckpt.safety_head_state()
    writer = gguf.GGUFWriter(None, ARCHITECTURE)
    _add_keys(writer, ckpt, head is not None, text_content_hash, model_name)
    _add_tensors(writer, ckpt, head)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        try:
            writer.write_header_to_file(path=tmp)
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return out_path


def _add_keys(writer, ckpt, has_head: bool, text_content_hash: str, model_name: str | None) -> None:
    """Every key/value pair of the sidecar, in the file's order (see the module docstring)."""
    from so8t.adapters import qwen2vl

    cfg = ckpt.so8t_config
    writer.add_type(GGUF_TYPE)
    if model_name:
        writer.add_name(model_name)
    writer.add_uint32("so8t.format_version", SIDECAR_VERSION)
    writer.add_uint32("so8t.checkpoint_version", int(cfg["version"]))
    writer.add_uint32("so8t.rotation_dim", int(cfg["rotation_dim"]))
    writer.add_string("so8t.group", str(cfg.get("group", "SO(8)")))
    writer.add_string("so8t.map", ckpt.rotation_map.value)
    writer.add_string("so8t.parametrisation", str(cfg.get("parametrisation", "")))
    writer.add_uint32("so8t.block_count", ckpt.num_layers)
    writer.add_uint32("so8t.embedding_length", ckpt.hidden_size)
    writer.add_array("so8t.gates", list(qwen2vl.GATE_NAMES))
    writer.add_array("so8t.gate_sites", [site.name for site in qwen2vl.FOLD_SITES])
    for site in qwen2vl.FOLD_SITES:
        writer.add_array(f"so8t.gate_sites.{site.name}", list(site.gates))
    writer.add_bool("so8t.safety_head", has_head)
    writer.add_array("so8t.safety_classes", list(cfg.get("safety_classes", [])))
    writer.add_string("so8t.safety_head.activation", SAFETY_ACTIVATION)
    _add_training_keys(writer, cfg.get("training") or {}, has_head)
    writer.add_string("so8t.text_content_hash", text_content_hash)
    source = cfg.get("source", {}) or {}
    writer.add_string("so8t.source_model", source_model_name(ckpt.reader.config))  # a name, not a path
    writer.add_string("so8t.source_sha256", str(source.get("sha256", "")))


def _add_tensors(writer, ckpt, head: dict | None) -> None:
    """Per layer and gate: generators (float32) and rotations (float64); then the safety head (float32)."""
    import torch

    from so8t.adapters import qwen2vl

    for layer in range(ckpt.num_layers):
        for gate in qwen2vl.GATE_NAMES:
            g = ckpt.gate_generators(layer, gate).detach().to(torch.float32).contiguous().numpy()
            r = ckpt.rotation(layer, gate).detach().to(torch.float64).contiguous().numpy()
            writer.add_tensor(generators_name(layer, gate), g)
            writer.add_tensor(rotation_name(layer, gate), r)
    if head is not None:
        for suffix in SAFETY_TENSORS:
            key = SAFETY_PREFIX + suffix
            writer.add_tensor(key, head[key].detach().to(torch.float32).contiguous().numpy())
