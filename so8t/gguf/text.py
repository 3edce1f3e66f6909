"""Text GGUF writer: the folded Qwen2-VL language model as llama.cpp's ``qwen2vl`` architecture.

One pass over a stream of ``(hub name, torch tensor)`` pairs (folded weights arrive in float64, the
rest in their source dtype) writes *several* files at once, one per requested type: every tensor is
converted to float64 once and encoded straight into each file's type (see ``quant.encode``), so the
fold runs once per export however many types are asked for. Files are laid out before any data
arrives: the tensor inventory and every shape follow from the config (``names.text_inventory``), so
header, metadata and tensor table are written first and each tensor's bytes go to their precomputed
offset, in whatever order the stream yields them. Large tensors are converted in row chunks, and a
source tensor over ``READ_WHOLE_BYTES`` (the embedding) arrives unread (``LazyRows``) and is read chunk by
chunk, so peak memory is the tensor being encoded plus up to ``PREFETCH`` (``PREFETCH_GGML`` with block
types) read ahead (none while a tensor over ``PREFETCH_ALONE_BYTES`` is held; with block types in practice
a layer's worth, under 300 MB for the 2B model) plus a few ``CHUNK_BYTES`` chunks per file.

Work overlaps on separate threads, with bytes identical to a serial run: one thread reads (and folds)
the next source tensors (``Prefetch``), the main thread converts chunks and rounds the float types itself
while chunks of block types become jobs on ggml's quantizer pool (``quant.encode_later``), and one
writer thread (``OrderedWriter``) first writes each file's header (serializing the tokenizer metadata),
then each encoded chunk at its offset, feeding the per-tensor sha256, in submission order.
An exception on any thread surfaces in the caller. Tensors that were not folded (bf16/f16/f32 source) are
converted to float32, which is exact; every encoder rounds float32 and float64 inputs identically when the
float64 value is a float32 (``quant.encode``), so only folded (float64) tensors pay for float64.

Each file gets ``general.architecture = "qwen2vl"``, every hyper-parameter llama.cpp reads (with
``rope.dimension_sections`` as an INT32 array of 4), the tokenizer, the ``so8t.*`` keys, and only the
tensors llama.cpp expects (tied embeddings: no ``output.weight``). Norms and biases are F32.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_VERSION, GGMLQuantizationType, GGUFWriter

from so8t import bf16, profile
from so8t.checkpoint.lazy_rows import LazyRows
from so8t.errors import ExportError
from so8t.gguf import ggml_kernels, metadata, names, quant
from so8t.gguf.background import OrderedWriter, Prefetch
from so8t.gguf.hparams import TextHParams
from so8t.gguf.llama_mix import llama_mix
from so8t.gguf.tokenizer import TokenizerMeta

ARCH = "qwen2vl"
CHUNK_BYTES = 4 << 20  # float64 bytes converted at a time (half that for float32 sources); small: RSS
WRITE_QUEUE = 3  # encoded chunks waiting for the writer thread
PREFETCH = 1  # source tensors read (and folded) ahead of the one being encoded
PREFETCH_GGML = 8  # ... when block types are encoded: a layer has 12 tensors, so the fold of down_proj never
# stalls the quantizer-bound pass (full-size Q6_K: 25.4 -> 24.3 s, peak RSS +100 MB); float-only passes
# keep 1, which holds the F16 + mmproj export under 1 GB
PREFETCH_ALONE_BYTES = 128 << 20  # no read-ahead while encoding a larger tensor (the embedding): peak RSS
#: a source tensor over this size is not read whole: it arrives as ``LazyRows`` and each chunk of rows is read
#: when converted (full-size F16 + mmproj export, peak RSS by /usr/bin/time: 869 -> 706 MB)
READ_WHOLE_BYTES = 64 << 20


@dataclass
class TextResult:
    """What one written text file holds."""

    quant: str
    path: Path
    content_hash: str = ""
    tensor_types: dict[str, str] = field(default_factory=dict)
    fallbacks: list[str] = field(default_factory=list)


@dataclass
class _Slot:
    """One tensor's place in one output file."""

    ggml_type: GGMLQuantizationType
    offset: int
    nbytes: int
    hasher: object = None
    written: int = 0
    importance: np.ndarray | None = None  # block types with an importance matrix: one float32 per column


class _OpenFile:
    def __init__(
        self,
        path: Path,
        qt: quant.QuantType,
        inventory,
        hp,
        tok,
        keys,
        model_name,
        io: OrderedWriter,
        threads: int = 0,
        imatrix=None,
    ):
        self.path, self.qt, self.io, self.threads = path, qt, io, threads
        self.result = TextResult(qt.name, path)
        quant.require_imatrix([qt], imatrix is not None)
        block = qt.method is quant.Method.LLAMA
        mix = llama_mix(hp, inventory, qt.file_type, ARCH, imatrix=imatrix is not None) if block else None
        if mix is not None:
            self.result.fallbacks.extend(mix.fallbacks)
        writer = GGUFWriter(path, ARCH)
        writer.add_name(model_name)
        hp.add_to(writer)
        writer.add_file_type(int(qt.file_type))
        writer.add_quantization_version(GGML_QUANT_VERSION)
        tok.add_to(writer)
        metadata.add_keys(writer, keys)
        if block and imatrix is not None:
            metadata.add_keys(writer, imatrix.quantize_keys())
        self.slots: dict[str, _Slot] = {}
        offset = 0
        for t in inventory:
            ggml_type = mix.types[t.gguf_name] if mix is not None else quant.tensor_type(qt, t.shape)
            size = quant.nbytes(t.shape, ggml_type)
            writer.add_tensor_info(t.gguf_name, t.shape, np.dtype(np.float32), size, raw_dtype=ggml_type)
            importance = imatrix.importance(t.gguf_name) if block and imatrix is not None else None
            self.slots[t.gguf_name] = _Slot(ggml_type, offset, size, hashlib.sha256(), importance=importance)
            self.result.tensor_types[t.gguf_name] = ggml_type.name
            offset += GGUFWriter.ggml_pad(size, writer.data_alignment)
        self.writer, self.data_bytes = writer, offset
        self.handle, self.data_start = None, 0
        # serializing the metadata (150k tokens + merges) takes ~0.5 s: the writer thread does it, first
        io.call(self._write_header)

    def _write_header(self) -> None:
        """Header, metadata and tensor table; then the file is sized so every tensor has its place."""
        self.writer.write_header_to_file()
        self.writer.write_kv_data_to_file()
        self.writer.write_ti_data_to_file()
        self.handle = self.writer.fout[0]
        self.data_start = GGUFWriter.ggml_pad(self.handle.tell(), self.writer.data_alignment)
        self.handle.truncate(self.data_start + self.data_bytes)  # zero padding everywhere, data filled later

    def _write_at(self, offset: int, buf: memoryview) -> None:
        with profile.phase("write"):
            self.handle.seek(self.data_start + offset)
            self.handle.write(buf)

    def put(self, name: str, rows: np.ndarray) -> None:
        """Append a chunk of whole rows (float64, or float32 for tensors that were not folded) of tensor
        ``name``; the writer thread writes it at its offset once the header is written."""
        slot = self.slots[name]
        encoded = quant.encode_later(rows, slot.ggml_type, self.threads, slot.importance)
        self.io.submit(functools.partial(self._write_at, slot.offset + slot.written), encoded, slot.hasher)
        slot.written += quant.nbytes(rows.shape, slot.ggml_type)

    def finish(self, inventory) -> TextResult:
        records = []
        for t in inventory:
            slot = self.slots[t.gguf_name]
            if slot.written != slot.nbytes:
                raise ExportError(
                    f"{t.gguf_name}: wrote {slot.written} of {slot.nbytes} bytes", path=self.path
                )
            records.append((t.gguf_name, slot.ggml_type, list(reversed(t.shape)), slot.hasher.digest()))
        self.writer.close()
        self.result.content_hash = metadata.content_hash_of(records)
        metadata.patch_content_hash(self.path, self.result.content_hash)
        return self.result

    def close(self) -> None:
        self.writer.close()


def write_text_ggufs(
    tensors: Iterable[tuple[str, object]],
    hparams: TextHParams,
    tokenizer: TokenizerMeta,
    outputs: dict[str, tuple[quant.QuantType, Path]],
    so8t_keys: dict[str, object],
    model_name: str,
    progress: bool = True,
    threads: int = 0,
    imatrix=None,
) -> dict[str, TextResult]:
    """Write one text GGUF per entry of ``outputs`` (key -> (quant type, path)) in one pass over
    ``tensors``; block types are encoded on ``threads`` threads (0: one per CPU), weighted by ``imatrix``
    (``so8t.imatrix.Imatrix``, checked against the model; None: unweighted). Non-text tensors
    (``visual.*``) and a tied ``lm_head.weight`` are skipped; anything else unknown, a wrong shape, or a
    missing tensor raises ``ExportError``."""
    uses_ggml = any(qt.method is quant.Method.LLAMA for qt, _ in outputs.values())
    with ggml_kernels.torch_single_threaded(uses_ggml):
        depth = PREFETCH_GGML if uses_ggml else PREFETCH
        return _write_text_ggufs(
            tensors, hparams, tokenizer, outputs, so8t_keys, model_name, progress, threads, depth, imatrix
        )


def _write_text_ggufs(tensors, hparams, tokenizer, outputs, so8t_keys, model_name, progress, threads, depth,
                      imatrix):
    inventory = names.text_inventory(hparams.dims, hparams.n_layers, hparams.tied)
    expected = {t.hf_name: t for t in inventory}
    files: dict[str, _OpenFile] = {}
    # the reader thread starts now: the first tensors are read while the headers are written
    stream = Prefetch(tensors, depth, _item_nbytes, PREFETCH_ALONE_BYTES)
    io: OrderedWriter | None = None
    try:
        io = OrderedWriter(WRITE_QUEUE)
        for key, (qt, path) in outputs.items():
            files[key] = _OpenFile(
                Path(path), qt, inventory, hparams, tokenizer, so8t_keys, model_name, io, threads, imatrix
            )
        seen: set[str] = set()
        bar = _progress(len(inventory), progress)
        for raw_name, tensor in stream:
            name = names.canonical_name(raw_name)
            if name not in expected:
                if name.startswith(("visual.", "model.visual.")) or (
                    name == "lm_head.weight" and hparams.tied
                ):
                    continue
                raise ExportError(
                    f"unexpected text tensor {raw_name!r}: llama.cpp's qwen2vl has no place for it"
                )
            spec = expected[name]
            if tuple(tensor.shape) != spec.shape:
                raise ExportError(f"{raw_name}: shape {tuple(tensor.shape)}, config implies {spec.shape}")
            if name in seen:
                raise ExportError(f"tensor {raw_name!r} appears twice in the stream")
            seen.add(name)
            _stream_rows(tensor, spec, files.values())
            del tensor  # let the reader thread hold the next one instead
            bar.update(1)
        bar.close()
        missing = [t.hf_name for t in inventory if t.hf_name not in seen]
        if missing:
            raise ExportError(f"{len(missing)} text tensors missing from the checkpoint, e.g. {missing[:3]}")
        io.close()
        return {key: f.finish(inventory) for key, f in files.items()}
    finally:
        stream.close()
        if io is not None:
            io.close(check=False)
        for f in files.values():
            f.close()


def _stream_rows(tensor, spec: names.TextTensor, files) -> None:
    """Convert ``tensor`` a chunk of rows at a time and hand each chunk to every file: float64 tensors
    (folded) stay float64, any other float dtype becomes float32 (exact for bf16/f16/f32)."""
    import torch

    wide = tensor.dtype == torch.float64 or not tensor.dtype.is_floating_point
    convert = bf16.to_float64 if wide else bf16.to_float32
    if len(spec.shape) == 1:
        with profile.phase("cast"):
            values = convert(tensor)
        for f in files:
            f.put(spec.gguf_name, values)
        return
    rows_per_chunk = max(1, CHUNK_BYTES // (8 * spec.shape[1]))
    for start in range(0, spec.shape[0], rows_per_chunk):
        with profile.phase("cast"):
            values = convert(tensor[start : start + rows_per_chunk])
        for f in files:
            f.put(spec.gguf_name, values)


def _item_nbytes(item) -> int:
    """Bytes an item holds in memory while it waits (``LazyRows``: none, its rows are read later)."""
    tensor = item[1]
    if isinstance(tensor, LazyRows):
        return 0
    return tensor.element_size() * tensor.nelement()


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="text GGUF", unit="tensor", disable=not enabled, leave=False)
