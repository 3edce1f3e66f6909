"""The acceptance gate's pytest plugin: its command-line options and markers.

Registered through the package's ``pytest11`` entry point (pyproject.toml), so pytest loads it before it
parses the command line, from any directory and whatever rootdir it derives. That is what makes the
documented ``pytest --so8t-model /path/to/checkpoint`` (with a space) work: an option registered only in
the repository's conftest.py is unknown while pytest still takes ``/path/to/checkpoint`` for a test path,
derives its rootdir from it and never loads that conftest.py.

Options:
    --so8t-model PATH   run the suites on a user's Qwen2-VL checkpoint instead of the embedded default.
"""

from __future__ import annotations

MARKERS = (
    "llama: needs llama-cpp-python (runs in the default gate)",
    "slow: heavier check, still in the default gate",
    "converter: compares with llama.cpp's own convert_hf_to_gguf.py (LLAMA_CPP_CONVERTER)",
)


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
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
