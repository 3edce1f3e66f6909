"""``so8t.bf16``: the bit-level bfloat16 conversions equal torch's own, for every one of the 65,536 values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from so8t import bf16


def _every_bfloat16() -> torch.Tensor:
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    return bits.view(torch.bfloat16).reshape(256, 256)


def test_to_float32_is_exact_for_every_bfloat16_value():
    values = _every_bfloat16()
    got = bf16.to_float32(values)
    assert got.dtype == np.float32 and got.shape == (256, 256)
    # compare bits, so NaN payloads, signed zeros and subnormals count too
    assert np.array_equal(got.view(np.uint32), values.to(torch.float32).numpy().view(np.uint32))


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # signalling NaNs
def test_to_float64_is_exact_and_handles_views():
    values = _every_bfloat16()
    got = bf16.to_float64(values[:, 3:200])  # a non-contiguous slice, as the exporter's row chunks can be
    want = values[:, 3:200].to(torch.float64).numpy()
    assert got.dtype == np.float64
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))


def test_other_dtypes_go_through_torch():
    x = torch.linspace(-3, 3, 97, dtype=torch.float16)
    assert np.array_equal(bf16.to_float32(x), x.float().numpy())
    assert np.array_equal(bf16.to_float64(x), x.double().numpy())
