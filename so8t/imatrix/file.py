"""llama.cpp's importance-matrix GGUF format, read and written with gguf-py (docs/reference.md section 8).

The format ``llama-imatrix`` writes and ``llama-quantize --imatrix`` reads (llama.cpp's
``tools/imatrix/imatrix.cpp`` and ``common/imatrix-loader.cpp``):

* metadata ``general.type = "imatrix"``, ``imatrix.datasets`` (array of strings: where the calibration text
  came from), ``imatrix.chunk_count`` and ``imatrix.chunk_size`` (UINT32: chunks of tokens evaluated, and
  tokens per chunk); llama-quantize refuses a GGUF imatrix without all three;
* per weight ``W`` (a GGUF tensor name such as ``blk.0.attn_q.weight``) two F32 tensors:
  ``W.in_sum2`` with ggml shape ``[n_in, n_experts]`` = the *sum* over tokens of each input column's squared
  activation, and ``W.counts`` ``[1, n_experts]`` = the number of tokens summed.

The importance vector handed to the quantizer is ``in_sum2 / counts`` in float32 (the loader divides in
float; a zero count gives ones), per expert; so8t's models have one expert. ``Imatrix.importance`` computes
exactly that, so so8t's kernels see the values llama-quantize would pass. The legacy ``.dat`` format is not
read (llama-imatrix writes GGUF by default).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from so8t.errors import GGUFError

SUM2, COUNTS = ".in_sum2", ".counts"


@dataclass
class Imatrix:
    """Sums of squared input activations per weight: gguf tensor name -> ``sums`` float64/32 ``[n_in]`` and
    ``counts`` (tokens summed); ``datasets``, ``chunk_count``, ``chunk_size`` as llama.cpp records them."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    path: Path | None = None  # the file it was read from, if any

    def importance(self, name: str) -> np.ndarray | None:
        """The importance vector of weight ``name`` as llama-quantize computes it (float32 ``in_sum2 /
        counts``; ones for a zero count), or None when the matrix has no entry for it."""
        if name not in self.sums:
            return None
        sums = np.asarray(self.sums[name], dtype=np.float32)
        count = np.float32(self.counts[name])
        return sums / count if count > 0 else np.ones_like(sums)

    def quantize_keys(self) -> dict[str, object]:
        """The metadata llama-quantize writes into a file quantized with an imatrix (its ``quantize.imatrix.*``
        keys); ``file`` is the imatrix's file name, which the exporter places beside the file."""
        return {"quantize.imatrix.file": self.path.name if self.path else "",
                "quantize.imatrix.dataset": self.datasets[0] if self.datasets else "",
                "quantize.imatrix.entries_count": len(self.sums), "quantize.imatrix.chunks_count": self.chunk_count}

    def check_model(self, matrices: dict[str, int], where: str | Path | None = None) -> None:
        """Raise a one-line ``GGUFError`` naming the file unless every weight of ``matrices`` (gguf name ->
        row length, the weights an imatrix covers) has an entry of its row length with a positive count."""
        where = where if where is not None else self.path
        wrong = [(n, len(self.sums[n]), k) for n, k in matrices.items() if n in self.sums and len(self.sums[n]) != k]
        if wrong:
            name, got, want = wrong[0]
            raise GGUFError(f"importance matrix of another model: {name} has {got} columns, the model's rows have "
                            f"{want} ({len(wrong)} entries differ)", path=where)
        missing = [n for n in matrices if n not in self.sums]
        if missing:
            raise GGUFError(f"importance matrix lacks {len(missing)} of the model's {len(matrices)} weights, e.g. "
                            f"{missing[0]}", path=where, hint="compute one for this model with 'so8t imatrix'")
        empty = [n for n in matrices if not self.counts[n] > 0]
        if empty:
            raise GGUFError(f"importance matrix has no tokens for {empty[0]}", path=where)


def write_imatrix(imatrix: Imatrix, path: str | Path) -> None:
    """Write ``imatrix`` to ``path`` in llama.cpp's format (entries sorted by name, as llama-imatrix does).
    Not atomic by itself: callers write to ``so8t.io.atomic_path``."""
    from gguf import GGUFType, GGUFWriter, Keys

    writer = GGUFWriter(path, arch=None)
    writer.add_type(GGUFType.IMATRIX)
    writer.add_array(Keys.IMatrix.DATASETS, list(imatrix.datasets))
    writer.add_uint32(Keys.IMatrix.CHUNK_COUNT, int(imatrix.chunk_count))
    writer.add_uint32(Keys.IMatrix.CHUNK_SIZE, int(imatrix.chunk_size))
    for name in sorted(imatrix.sums):
        writer.add_tensor(name + SUM2, np.asarray(imatrix.sums[name], dtype=np.float32).reshape(1, -1))
        writer.add_tensor(name + COUNTS, np.array([[imatrix.counts[name]]], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_imatrix(path: str | Path) -> Imatrix:
    """Read an imatrix GGUF (ours or llama-imatrix's). A file that is missing, not a GGUF, not an imatrix,
    without llama.cpp's metadata, or with unpaired / non-F32 / non-finite entries raises a one-line
    ``GGUFError`` naming it."""
    from gguf import GGMLQuantizationType, GGUFReader, Keys

    path = Path(path)
    if not path.is_file():
        raise GGUFError("importance matrix file not found", path=path)
    try:
        reader = GGUFReader(path)
    except (ValueError, IndexError, KeyError, TypeError, OSError, struct.error) as err:  # gguf-py on corrupt files
        raise GGUFError(f"not a readable GGUF importance matrix ({type(err).__name__}: {err})", path=path) from None

    def value(key):
        f = reader.get_field(key)
        return None if f is None else f.contents()

    if value("general.type") != "imatrix":
        raise GGUFError(f"not an importance matrix (general.type is {value('general.type')!r}, not 'imatrix')",
                        path=path)
    keys = (Keys.IMatrix.DATASETS, Keys.IMatrix.CHUNK_COUNT, Keys.IMatrix.CHUNK_SIZE)
    if any(reader.get_field(k) is None for k in keys):
        raise GGUFError("importance matrix lacks llama.cpp's metadata " + ", ".join(keys), path=path)
    sums, counts = {}, {}
    for t in reader.tensors:
        if t.tensor_type != GGMLQuantizationType.F32:
            raise GGUFError(f"{t.name} is {t.tensor_type.name}; imatrix entries are F32", path=path)
        data = np.array(t.data, dtype=np.float32).reshape(-1)
        if not np.isfinite(data).all():
            raise GGUFError(f"{t.name} holds non-finite values", path=path)
        if t.name.endswith(SUM2):
            sums[t.name[: -len(SUM2)]] = data
        elif t.name.endswith(COUNTS):
            counts[t.name[: -len(COUNTS)]] = data
    if not sums or set(sums) != set(counts):
        odd = sorted(set(sums) ^ set(counts))
        raise GGUFError("importance matrix has no entries" if not odd else f"unpaired entry {odd[0]}", path=path)
    if any(c.size != 1 for c in counts.values()):
        raise GGUFError("importance matrix has several experts per weight; so8t's models have one", path=path)
    return Imatrix(sums, {n: float(c[0]) for n, c in counts.items()}, [str(d) for d in value(keys[0])],
                   int(value(keys[1])), int(value(keys[2])), path)


def imatrix_of(gguf_path: str | Path, reader) -> Imatrix | None:
    """The importance matrix a text GGUF was quantized with: the file its ``quantize.imatrix.file`` key names,
    beside it (where ``so8t export`` puts it); None for a file quantized without one. A named file that is
    missing or broken raises ``GGUFError`` naming it."""
    field = reader.get_field("quantize.imatrix.file")
    if field is None:
        return None
    return read_imatrix(Path(gguf_path).parent / Path(str(field.contents())).name)
