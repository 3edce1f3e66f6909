"""The acceptance gate's pytest plugin: its command-line options and markers.

Registered through the package's ``pytest11`` entry point (pyproject.toml), so pytest loads it before it
parses the command line, from any directory and whatever rootdir it derives. That is what makes the
documented ``pytest --so8t-model /path/to/checkpoint`` (with a space) work: an option registered only in
the repository's conftest.py is unknown while pytest still takes ``/path/to/checkpoint`` for a test path,
derives its rootdir from it and never loads that conftest.py.

Options:
    --so8t-model PATH            run the suites on a user's Qwen2-VL checkpoint instead of the embedded default.
    --so8t-memory-budget GB      memory a test may fill with whole in-memory copies of the model (default 6).
    --so8t-heavy                 on a user's checkpoint, also run the tests marked ``heavy`` (the nightly job does).
    --so8t-tool-checks           on a user's checkpoint, also run the checks of the tool itself (below).

Checks of the tool itself: a test whose fixtures never reach ``source_checkpoint`` (the suites' one fixture
that reads ``--so8t-model``, suites/fixtures/checkpoints.py) cannot tell one checkpoint from another: the
group laws, the CLI's errors, the writers on synthetic tensors, the dashboard, the pipeline and the exports'
naming on the embedded model. They run in the default gate (CI). On ``--so8t-model`` they would repeat it
word for word (about 4 minutes of a real-weights gate), so there they are skipped, with that reason, unless
``--so8t-tool-checks`` is given.

Marker ``heavy``: a check of code paths whose cost grows with the model while what it proves does not
depend on the model's shape: the per-type repeats of a whole-model check (byte identity with llama.cpp's
quantizer and with the plain model's baseline for each block type, and with an importance matrix for each
low-bit type, the whole model re-quantized twice per type; the validator's verdict on more honest files;
one type of each kind still runs, ``suites/fixtures/gguf_files.py`` ``LIGHT_BLOCK_TYPES``) and the training
runs (resume, distributed, calibration, the demo head's verdicts; minutes each at a real model's size). It always
runs on the embedded model (the default gate); on ``--so8t-model`` it runs only with ``--so8t-heavy`` and
is skipped otherwise, with that reason.

Marker ``whole_model(copies=1, dtype="float32")``: the test holds ``copies`` whole transformers models of
the checkpoint in ``dtype`` at once (the float64 oracles of the equivalence suites). It runs whenever
``copies * parameters * itemsize`` fits the budget, which the embedded model always does (44 M
parameters: 0.35 GB per float64 copy); at Qwen2-VL-2B size (2.2 B parameters: 8.8 GB per float32 copy)
it is skipped with the figures in the reason. What such a test proves on the embedded model, the streamed
float64 reference (``so8t.reference``, one layer in memory) carries to every size: the parity suites use
it, so parity for every quant type runs at every size.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest

MARKERS = (
    ("whole_model(copies=1, dtype='float32'): holds whole in-memory copies of the model; skipped with the "
    "figures when they exceed --so8t-memory-budget"),
    "llama: needs llama-cpp-python (runs in the default gate)",
    "converter: compares with llama.cpp's own convert_hf_to_gguf.py (LLAMA_CPP_CONVERTER)",
    "cuda: needs a CUDA GPU; skipped, with the reason, where torch sees none (CI)",
    "heavy: a per-type repeat of a whole-model check or a training run; on --so8t-model runs only with --so8t-heavy",
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
    group.addoption(
        "--so8t-memory-budget",
        action="store",
        type=float,
        default=6.0,
        metavar="GB",
        help="memory a test may fill with whole in-memory model copies (marker whole_model; default 6 GB)",
    )
    group.addoption(
        "--so8t-heavy",
        action="store_true",
        default=False,
        help="with --so8t-model: also run the tests marked heavy (per-type re-quantization, training runs)",
    )
    group.addoption(
        "--so8t-tool-checks",
        action="store_true",
        default=False,
        help="with --so8t-model: also run the checks of the tool itself, which never read the checkpoint "
        "(the default gate runs them)",
    )


#: The suites' fixture that reads ``--so8t-model``: a test whose fixture closure lacks it is a check of the tool.
CHECKPOINT_FIXTURE = "source_checkpoint"
#: Why such a check is skipped on ``--so8t-model`` without ``--so8t-tool-checks``.
TOOL_CHECK_SKIP = ("a check of the tool itself: it never reads the checkpoint under test and runs in the default "
                   "gate; --so8t-tool-checks runs it here too")


def heavy_enabled(config) -> bool:
    """Whether tests marked ``heavy`` run: always on the embedded model, with ``--so8t-heavy`` on a user's."""
    return not config.getoption("--so8t-model") or bool(config.getoption("--so8t-heavy"))


def _space_form(args) -> int | None:
    """Index of a ``--so8t-model`` followed by its value as a separate argument, or None."""
    args = list(args)
    return next((i for i, a in enumerate(args[:-1]) if a == "--so8t-model" and not args[i + 1].startswith("-")),
                None)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """Note [space form]: pytest derives its rootdir and configfile *before* it loads installed plugins, so
    in ``pytest --so8t-model /path`` it takes ``/path`` for a test path: rootdir ``/path``, no configfile,
    none of the project's ``addopts``/``testpaths``. When that happened, and pytest was started from the
    command line, the same command is run again with ``--so8t-model=/path`` (which pytest reads right);
    called in-process (``pytest.main``), it is a usage error that says which form to write."""
    import os
    import sys

    invoked = list(early_config.invocation_params.args)
    i = _space_form(invoked)
    if i is None or early_config.inipath is not None:
        return
    fixed = [*invoked[:i], f"--so8t-model={invoked[i + 1]}", *invoked[i + 2 :]]
    if sys.argv[1:] != invoked:
        raise pytest.UsageError(f"pytest took {invoked[i + 1]} for a test path (no configfile); write "
                                f"--so8t-model={invoked[i + 1]}")
    capture = early_config.pluginmanager.getplugin("capturemanager")
    if capture is not None:  # pytest has redirected fds 1 and 2 by now: give them back to the new process
        capture.stop_global_capturing()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "pytest", *fixed])


def pytest_configure(config):
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)


@functools.lru_cache(maxsize=4)
def _parameters(model: str | None) -> int:
    from so8t.checkpoint import CheckpointReader
    from so8t.testing import default_checkpoint

    reader = CheckpointReader(Path(model).expanduser() if model else default_checkpoint("tied"))
    return sum(math.prod(reader.shape(name)) for name in reader.names())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    config = item.config
    if (config.getoption("--so8t-model") and not config.getoption("--so8t-tool-checks")
            and CHECKPOINT_FIXTURE not in getattr(item, "fixturenames", ())):
        pytest.skip(TOOL_CHECK_SKIP)
    if item.get_closest_marker("heavy") is not None and not heavy_enabled(item.config):
        pytest.skip("heavy (a per-type repeat of a whole-model check, or a training run): on --so8t-model it runs "
                    "with --so8t-heavy")
    marker = item.get_closest_marker("whole_model")
    if marker is None:
        return
    import torch

    copies = int(marker.kwargs.get("copies", 1))
    dtype = getattr(torch, marker.kwargs.get("dtype", "float32"))
    params = _parameters(item.config.getoption("--so8t-model"))
    need = copies * params * torch.empty((), dtype=dtype).element_size()
    budget = float(item.config.getoption("--so8t-memory-budget")) * 1e9
    if need > budget:
        pytest.skip(f"holds {copies} whole {dtype} model(s) of {params / 1e9:.2f} B parameters: "
                    f"{need / 1e9:.1f} GB > --so8t-memory-budget {budget / 1e9:g} GB (the streamed checks "
                    "cover this size)")
