"""The float32 chain bound shared by the suites that compare two float32 computations of the same function.

Each of ``products`` dot products along the chain rounds its sum in float32 with an error of at most
``sqrt(K) 2^-24`` relative (K the dot product's length, errors of random sign), so two summation orders of
the whole chain differ by at most ``products * sqrt(K_max) * 2^-24`` of the largest value compared.
A decoder layer has 4 products on the residual path (attention output, o_proj, FFN up/gate, down_proj).
"""

from __future__ import annotations

import math


def f32_chain_bound(text_config, extra_products: int = 0) -> float:
    """Relative bound ``(4 L + extra_products) sqrt(max(hidden, ffn)) 2^-24`` for a text config given as a
    dict or as a transformers config object."""

    def get(key: str) -> int:
        return int(text_config[key] if isinstance(text_config, dict) else getattr(text_config, key))

    products = 4 * get("num_hidden_layers") + extra_products
    return products * math.sqrt(max(get("hidden_size"), get("intermediate_size"))) * 2.0**-24
