"""A large checkpoint tensor handed out unread, its rows read only when sliced (``LazyRows``).

A streaming consumer that converts a tensor a chunk of rows at a time (the GGUF text writer) never needs
the whole of it in memory; for the embedding of a 2B model (151936 x 1536 bf16, 467 MB) that is most of an
export's peak RSS. ``rows[a:b]`` reads just those rows (``CheckpointReader.get_rows``), in the stored dtype.
"""

from __future__ import annotations

import torch


class LazyRows:
    """The rows of tensor ``name`` of ``reader``, read on slicing: ``shape``, ``dtype`` (torch) and
    ``[a:b]`` (a torch tensor of those rows), as a torch tensor has them."""

    def __init__(self, reader, name: str):
        entry = reader.entry(name)
        self.reader, self.name = reader, name
        self.shape = torch.Size(entry.shape)
        self.dtype = getattr(torch, entry.dtype)

    def __getitem__(self, index: slice) -> torch.Tensor:
        if not isinstance(index, slice):
            raise TypeError(f"LazyRows of {self.name!r} can only be sliced by rows, not indexed by {index!r}")
        start, stop, step = index.indices(self.shape[0])
        if step != 1:
            raise ValueError(f"LazyRows of {self.name!r}: only contiguous row slices, got step {step}")
        return self.reader.get_rows(self.name, start, stop)


def tensor_or_rows(reader, name: str, lazy_above: int | None) -> torch.Tensor | LazyRows:
    """Tensor ``name`` read now, or as ``LazyRows`` when it has 2+ dimensions and over ``lazy_above``
    bytes (None: always read now)."""
    entry = reader.entry(name)
    if lazy_above is not None and len(entry.shape) >= 2 and entry.nbytes > lazy_above:
        return LazyRows(reader, name)
    return reader.get(name)
