"""Acceptance gate configuration.

Options:
    --so8t-model PATH   run the suites on a user's Qwen2-VL checkpoint instead of the embedded default.

Fixture modules live in ``suites/fixtures/`` (conversion, GGUF exports); conversion and export run once
per session. Markers are registered here. Hypothesis: the built-in ``ci`` profile loads when ``CI`` is
set (derandomised, no deadline); ``dev`` is the quicker local profile; ``SO8T_HYPOTHESIS_PROFILE``
overrides both.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Nothing in the gate may reach a model hub: transformers must only ever read local directories.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = [
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


def pytest_addoption(parser):
    group = parser.getgroup("so8t")
    group.addoption(
        "--so8t-model",
        action="store",
        default=None,
        metavar="PATH",
        help="Qwen2-VL checkpoint directory to gate (default: the embedded default model, built on demand)",
    )


def pytest_configure(config):
    config.addinivalue_line("markers", "llama: needs llama-cpp-python (runs in the default gate)")
    config.addinivalue_line("markers", "slow: heavier check, still in the default gate")
    config.addinivalue_line(
        "markers", "converter: compares with llama.cpp's own convert_hf_to_gguf.py (LLAMA_CPP_CONVERTER)"
    )
