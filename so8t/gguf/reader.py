"""``open_gguf``: gguf-py's ``GGUFReader``, with its byte buffer as a plain ndarray view of the memory map.

``GGUFReader`` slices its ``np.memmap`` once per header item; every slice of a ``memmap`` runs the
subclass's ``__array_finalize__``, so parsing a text GGUF (151,936 tokens, token types and 151,387
merges: about 2.3 million slices) took 8.1 s at the real size, 5.4 s of it in that hook. A plain ndarray
view of the same mapping parses the same bytes in 2.7 s (measured on the full-size replica's Q8_0 file).
The mapping stays alive through the view's ``base``; fields and tensors are the reader's own, unchanged
(``suites/test_gguf_reader.py`` compares them with a stock ``GGUFReader``; the timing is
``benchmarks/test_bench_gguf_read.py::test_open_gguf``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFReader


class _PlainBufferReader(GGUFReader):
    """``GGUFReader`` whose ``data`` attribute, once assigned by the base ``__init__``, is a plain view."""

    @property
    def data(self) -> np.ndarray:
        return self._plain_data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self._plain_data = value.view(np.ndarray)


def open_gguf(path: str | Path, mode: str = "r") -> GGUFReader:
    """gguf-py's reader of ``path`` (``mode`` ``"r"`` or ``"r+"``, as ``GGUFReader``), parsed faster."""
    return _PlainBufferReader(path, mode)
