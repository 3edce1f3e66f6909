"""Acceptance gate configuration.

Options and markers (``--so8t-model PATH``) live in the package's pytest plugin,
``so8t.testing.pytest_plugin``, registered through its ``pytest11`` entry point so that they work from
any directory. Fixture modules live in ``suites/fixtures/`` (conversion, GGUF exports); conversion and
export run once per session. Hypothesis: the built-in ``ci`` profile loads when ``CI`` is
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
