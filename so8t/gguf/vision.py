"""Vision projector GGUF (mmproj) for llama.cpp's multimodal loader, from an SO8T (or plain Qwen2-VL) dir.

SO8T gates sit on the text decoder only, so the vision tower is written exactly as the source holds it:
the tensors are read one at a time through ``CheckpointReader`` (canonical ``visual.*`` names), renamed
and cut by the table in :mod:`so8t.gguf.vision_names`, cast once to the export type, and streamed into a
temporary file that is renamed onto the output only when complete (``so8t.io.atomic_path``). One writer
thread (``so8t.gguf.background.OrderedWriter``, the text writer's) writes tensor i, in order, while the
next is read and cast; its errors surface in the caller.

File layout (what ``tools/mtmd/clip.cpp`` reads for projector ``qwen2vl_merger``):

* ``general.architecture = "clip"``, ``general.type = "mmproj"``, ``general.file_type`` (0 = all F32,
  1 = mostly F16), ``clip.projector_type = "qwen2vl_merger"``, ``clip.has_vision_encoder = true``.
* Required ``clip.vision.*`` hyper-parameters: ``embedding_length`` (embed_dim), ``feed_forward_length``,
  ``block_count`` (depth), ``attention.head_count``, ``attention.layer_norm_epsilon``,
  ``projection_dim`` (the merger output = the text model's hidden size; llama.cpp refuses an mmproj whose
  projection does not match the text model), ``image_size``, ``patch_size``, ``image_mean``/``image_std``
  (from ``preprocessor_config.json``); optional ``spatial_merge_size`` (written explicitly).
* Dtypes: 1-D tensors (LayerNorm weights and biases, Linear biases) are always F32; matrices and the two
  Conv2d kernels take the requested type (``"f16"`` or ``"f32"``).

Note [eps]: transformers hard-codes ``LayerNorm(eps=1e-6)`` in the Qwen2-VL vision blocks and merger (it
is not in config.json), so 1e-6 (the default of ``so8t.checkpoint.config``) is written unless the vision
config names ``layer_norm_eps``. Note [image size]: Qwen2-VL has no fixed input size
(llama.cpp resizes dynamically); ``clip.vision.image_size`` is required by the loader and only sizes its
warm-up, so ``vision_config["image_size"]`` is used when present and 560 (llama.cpp's converter default)
otherwise. Note [ffn length]: llama.cpp's converter writes the vision ``hidden_size`` (the merger output)
as ``feed_forward_length``; we write the true MLP width ``embed_dim * mlp_ratio``. The qwen2vl graph does
not read it, and the loader's legacy up/down swap test only compares ``ffn_down``'s width to embed_dim.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import numpy as np

from so8t import profile
from so8t.errors import ConfigError, ExportError
from so8t.gguf import vision_names as names
from so8t.gguf.background import OrderedWriter
from so8t.gguf.hparams import VisionHParams
from so8t.io import atomic_path

#: export dtype name -> (numpy dtype of matrices, general.file_type value)
DTYPES: dict[str, tuple[type, int]] = {"f32": (np.float32, 0), "f16": (np.float16, 1)}


def _piece_shape(piece: names.Piece, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = list(shape)
    if piece.select:
        del out[piece.axis]
    else:
        out[piece.axis] //= piece.parts
    return tuple(out)


def _cut(piece: names.Piece, tensor):
    if piece.select:
        return tensor.select(piece.axis, piece.index)
    return tensor.chunk(piece.parts, dim=piece.axis)[piece.index] if piece.parts > 1 else tensor


def _image_stats(reader) -> tuple[list[float], list[float]]:
    pre = Path(reader.path) / "preprocessor_config.json"
    cfg = reader.preprocessor_config
    if cfg is None:
        raise ConfigError(
            "preprocessor_config.json is missing; the mmproj must carry the image mean/std the model was "
            "trained with",
            path=pre,
            hint="copy the source model's preprocessor_config.json into the directory",
        )
    try:
        mean, std = [float(v) for v in cfg["image_mean"]], [float(v) for v in cfg["image_std"]]
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"image_mean/image_std unreadable: {err}", path=pre) from err
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError("image_mean and image_std need 3 values (RGB)", path=pre)
    return mean, std


def _add_metadata(writer, hp: VisionHParams, mean, std, file_type: int, model_name: str | None) -> None:
    writer.add_type(names.GGUF_TYPE)
    if model_name:
        writer.add_name(model_name)
    writer.add_description("Qwen2-VL vision tower and merger (unchanged by SO8T: gates are text-only)")
    writer.add_file_type(file_type)
    writer.add_string("clip.projector_type", names.PROJECTOR_TYPE)
    writer.add_bool("clip.has_vision_encoder", True)
    act_key = names.ACTIVATION_KEYS[hp.hidden_act]
    if act_key:
        writer.add_bool(act_key, True)
    v = "clip.vision."
    writer.add_uint32(v + "image_size", hp.image_size)
    writer.add_uint32(v + "patch_size", hp.patch_size)
    writer.add_uint32(v + "embedding_length", hp.embed_dim)
    writer.add_uint32(v + "feed_forward_length", hp.ffn_dim)
    writer.add_uint32(v + "projection_dim", hp.projection_dim)
    writer.add_uint32(v + "block_count", hp.depth)
    writer.add_uint32(v + "attention.head_count", hp.num_heads)
    writer.add_float32(v + "attention.layer_norm_epsilon", hp.layer_norm_eps)
    writer.add_uint32(v + "spatial_merge_size", hp.spatial_merge_size)
    writer.add_array(v + "image_mean", mean)
    writer.add_array(v + "image_std", std)


def write_mmproj(
    so8t_dir: str | Path,
    out_path: str | Path,
    dtype: str = "f16",
    model_name: str | None = None,
    progress: bool = False,
) -> Path:
    """Write the mmproj GGUF of ``so8t_dir``'s vision tower to ``out_path``; return ``out_path``.

    Args:
        so8t_dir: an SO8T directory or a plain Qwen2-VL checkpoint (anything ``CheckpointReader`` opens).
        out_path: the ``.gguf`` to write (atomically: a failure leaves nothing there).
        dtype: ``"f16"`` or ``"f32"`` for matrices and conv kernels; 1-D tensors are always F32.
        model_name: optional ``general.name``.
        progress: show a tqdm bar on stderr.

    Raises ConfigError (vision config unusable, or contradicted by the tensors: via the reader),
    CheckpointError (via the reader), ExportError (a tensor overflows F16), So8tError (output not writable).
    """
    return MmprojPlan(so8t_dir, dtype, model_name, out_path).write(out_path, progress)


class MmprojPlan:
    """An mmproj laid out and checked (configs, tensor shapes, dtype), its data not yet read: the part of
    ``write_mmproj`` that can fail on bad input runs here, at once, so a caller that writes the data later
    (on another thread) still reports such input before it starts anything long."""

    def __init__(self, so8t_dir, dtype: str, model_name: str | None, out_path):
        import gguf

        from so8t.checkpoint import CheckpointReader

        if dtype not in DTYPES:
            raise ExportError(f"mmproj dtype must be one of {sorted(DTYPES)}, got {dtype!r}", path=out_path)
        np_dtype, file_type = DTYPES[dtype]
        self.reader = CheckpointReader(so8t_dir)  # refuses missing or misshapen vision tensors (config_rules)
        hp = VisionHParams.from_vision(self.reader.vision_config, self.reader.model_config.path)
        mean, std = _image_stats(self.reader)
        self.writer = gguf.GGUFWriter(None, names.ARCHITECTURE)
        _add_metadata(self.writer, hp, mean, std, file_type, model_name)
        self.plan, self.data_bytes = _plan(self.writer, hp, np_dtype)

    def write(
        self, out_path: str | Path, progress: bool = False, cancel: threading.Event | None = None
    ) -> Path:
        """Write the file (atomically); when ``cancel`` is set by another thread, stop before the next
        tensor with ``ExportError``."""
        import gguf

        out_path = Path(out_path)
        writer = self.writer
        with atomic_path(out_path) as tmp:
            try:
                writer.write_header_to_file(path=tmp)
                writer.write_kv_data_to_file()
                writer.write_ti_data_to_file()
                handle = writer.fout[0]
                data_start = gguf.GGUFWriter.ggml_pad(handle.tell(), writer.data_alignment)
                handle.truncate(data_start + self.data_bytes)  # zero padding everywhere, data filled below
                _write_data(handle, data_start, self.plan, self.reader, progress, cancel)
            finally:
                writer.close()
                self.reader.close()
        return out_path


def _plan(writer, hp: VisionHParams, np_dtype) -> tuple[list, int]:
    """Declare every mmproj tensor to ``writer``: ``[(piece, dtype, offset, size)]`` in file order, and the
    data section's size (offsets laid out as GGUFWriter lays them out)."""
    import gguf

    plan, offset = [], 0
    for piece in names.pieces(hp.depth):
        shape = _piece_shape(piece, hp.source_shape(piece.source))
        out_dtype = np.dtype(np.float32 if len(shape) == 1 else np_dtype)
        size = int(np.prod(shape)) * out_dtype.itemsize
        writer.add_tensor_info(piece.target, shape, out_dtype, size)
        plan.append((piece, out_dtype, offset, size))
        offset += gguf.GGUFWriter.ggml_pad(size, writer.data_alignment)
    return plan, offset


def _write_data(handle, data_start: int, plan: list, reader, progress: bool, cancel=None) -> None:
    """Read, cut and cast each planned tensor; the writer thread (``so8t.gguf.background.OrderedWriter``)
    writes tensor i at its offset, in order, while tensor i+1 is read and cast."""
    from tqdm import tqdm

    cache = None  # (source name, tensor): one source tensor feeds up to three pieces
    io = OrderedWriter(depth=1)
    try:
        for piece, out_dtype, at, size in tqdm(plan, desc="mmproj", unit="tensor", disable=not progress):
            if cancel is not None and cancel.is_set():
                raise ExportError("mmproj export cancelled")
            if cache is None or cache[0] != piece.source:
                cache = (piece.source, reader.get(piece.source))
            with profile.phase("cast"):
                array = _export_array(piece, cache[1], out_dtype)
            if array.nbytes != size:
                raise ExportError(f"{piece.target}: {array.nbytes} bytes, planned {size}")
            io.call(functools.partial(_write_at, handle, data_start + at, array))
            del array
        io.close()
    finally:
        io.close(check=False)


def _write_at(handle, position: int, array: np.ndarray) -> None:
    """Write ``array``'s bytes at ``position`` (``ndarray.tofile`` is several times slower)."""
    with profile.phase("write"):
        handle.seek(position)
        handle.write(memoryview(array).cast("B"))


def _export_array(piece: names.Piece, src, out_dtype: np.dtype) -> np.ndarray:
    """Cut ``piece`` out of the source tensor and cast it once to ``out_dtype`` (contiguous numpy)."""
    import torch

    part = _cut(piece, src)
    target = torch.float16 if out_dtype == np.float16 else torch.float32
    if target == torch.float16:
        peak = 0.0
        if part.numel():
            lo, hi = torch.aminmax(part)  # max |x| in one pass; NaN propagates to both
            peak = max(-float(lo), float(hi))
        if not np.isfinite(peak) or peak > float(np.finfo(np.float16).max):
            raise ExportError(
                f"{piece.source} holds values beyond the F16 range (max |x| = {peak:g})",
                hint="export the mmproj as f32",
            )
    return np.ascontiguousarray(part.to(target).numpy())
