"""Acceptance gate configuration.

Options and markers (``--so8t-model PATH``) live in the package's pytest plugin,
``so8t.testing.pytest_plugin``, registered through its ``pytest11`` entry point so that they work from
any directory. Fixture modules live in ``suites/fixtures/`` (conversion, GGUF exports); conversion and
export run once per session. Hypothesis: the built-in ``ci`` profile loads when ``CI`` is
set (derandomised, no deadline); ``dev`` is the quicker local profile; ``SO8T_HYPOTHESIS_PROFILE``
overrides both.
"""

from __future__ import annotations

import ctypes
import gc
import os

import pytest
from hypothesis import HealthCheck, settings

# Nothing in the gate may reach a model hub: transformers must only ever read local directories.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = [
    "suites.fixtures.release",  # first: gguf_extra imports it, and a plugin module is asserted-rewritten on import
    "suites.fixtures.checkpoints",
    "suites.fixtures.conversions",
    "suites.fixtures.gguf_files",
    "suites.fixtures.gguf_extra",
]

settings.register_profile(
    "ci",
    settings.get_profile("ci"),
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("SO8T_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


_LIBC = ctypes.CDLL(None)  # the C library this process already runs on


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """After each test's teardown, hand the C heap's free memory back to the kernel (glibc's
    ``malloc_trim``), and at the end of each module collect cyclic garbage first. Without it glibc keeps
    what a test freed (torch tensors, llama.cpp's buffers) in its arenas, and the one worker stays as large
    as the largest test so far beside the next test's own model: after ``test_imatrix.py`` on the 0.5 B
    real-weights checkpoint the next module started at 2.41 GB, with a trim at each module's end at 0.50 GB
    (the worker's resident size, docs/benchmarks.md). A trim is a walk over the heap's free chunks, cheap
    beside a test; ``gc.collect`` is not (about 0.1 s with torch loaded), so it runs once a module. A C
    library without ``malloc_trim`` (musl) keeps its memory: nothing to do there."""
    try:
        return (yield)
    finally:
        if nextitem is None or getattr(nextitem, "module", None) is not getattr(item, "module", None):
            gc.collect()
        trim = getattr(_LIBC, "malloc_trim", None)
        if trim is not None:
            trim(0)
