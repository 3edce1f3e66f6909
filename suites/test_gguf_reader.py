"""``so8t.gguf.reader.open_gguf`` is gguf-py's ``GGUFReader`` with a plain-ndarray buffer: it must read the
same fields, values and tensors as a stock ``GGUFReader`` (the reason it exists is a parse-time figure,
``benchmarks/test_bench_gguf_read.py::test_open_gguf``)."""

from __future__ import annotations

import numpy as np
from gguf import GGUFReader

from so8t.gguf.reader import open_gguf


def test_open_gguf_reads_what_gguf_reader_reads(gguf_text):
    path = gguf_text["Q8_0"].path
    ours, stock = open_gguf(path), GGUFReader(path)
    assert type(ours.data) is np.ndarray and isinstance(stock.data, np.memmap)
    assert list(ours.fields) == list(stock.fields)
    for key, field in stock.fields.items():
        assert ours.fields[key].types == field.types, key
        assert ours.fields[key].contents() == field.contents(), key
    assert [(t.name, t.tensor_type, t.shape.tolist(), t.data_offset) for t in ours.tensors] == [
        (t.name, t.tensor_type, t.shape.tolist(), t.data_offset) for t in stock.tensors
    ]
    first, last = ours.tensors[0], ours.tensors[-1]
    assert np.array_equal(first.data, stock.tensors[0].data) and np.array_equal(last.data, stock.tensors[-1].data)


def test_open_gguf_writes_through_in_r_plus_mode(gguf_text, tmp_path):
    import shutil

    path = tmp_path / "copy.gguf"
    shutil.copyfile(gguf_text["F32"].sidecar, path)
    reader = open_gguf(path, "r+")
    tensor = reader.tensors[0]
    tensor.data.flat[0] = 42
    del tensor, reader
    assert GGUFReader(path).tensors[0].data.flat[0] == 42
