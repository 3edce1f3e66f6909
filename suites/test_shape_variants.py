"""The gate on checkpoints shaped like users' checkpoints (docs/reference.md section 13).

Each variant of ``so8t.testing.default`` differs from the embedded default model the way real Qwen2-VL
checkpoints do. A child pytest runs, with ``--so8t-model=<variant>``, the suites whose expectations depend
on the checkpoint's shape, exactly as a user gating that checkpoint would, and must pass with no failure,
no error and no skip (beyond the listed ones, which say why). The selection keeps the default gate's cost
small: each variant runs what its difference can break.

* ``user-like``: untied, ``tokenizer.json`` only, template only in ``chat_template.json``, hidden 384 and
  FFN 1152 (K-quant fallbacks), 6 heads over 2 KV heads: the checkpoint reader, every exported type's
  inventory, keys, tokenizer and round-trip bound, llama.cpp's converter on the identity model, the types'
  KL order and greedy generation, extra buffers, IQ4_XS with an importance matrix (byte identity with
  llama.cpp's quantizer). (The whole gate on it: docs/reference.md section 13.)
* ``jinja``: the template only in ``chat_template.jinja``: training (which renders chats with it) and the
  GGUF's tokenizer keys.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from so8t.testing import default_checkpoint
from so8t.testing.pytest_plugin import TOOL_CHECK_SKIP

REPO = Path(__file__).resolve().parents[1]

SELECTIONS: dict[str, list[str]] = {
    "user-like": [
        "suites/test_checkpoint_reader.py",
        "suites/test_gguf_text.py",
        "suites/test_llama_parity.py::test_quant_types_order_by_bits",
        "suites/test_llama_parity.py::test_greedy_generation_matches_pytorch",
        "suites/test_llama_build.py::test_a_loaded_file_gives_the_same_logits_with_and_without_extra_buffers",
        # IQ4_XS rows of 384 fall back under llama.cpp's rule: byte identity with an importance matrix
        "suites/test_imatrix.py::test_imatrix_files_are_byte_identical_to_llama_quantize[IQ4_XS]",
        # llama.cpp's converter on the untied, tokenizer.json-only identity model, once (f16)
        "--deselect", "suites/test_gguf_text.py::test_identity_gates_match_llama_cpp_converter[q8_0]",
    ],
    "jinja": [
        "suites/test_train.py",
        "suites/test_gguf_text.py::test_tokenizer_keys",
    ],
}


@pytest.mark.parametrize("variant", sorted(SELECTIONS))
def test_the_gate_passes_on_a_user_shaped_checkpoint(variant, tmp_path, request):
    if request.config.getoption("--so8t-model"):
        pytest.skip("the shape variants check the gate itself, on variants of the embedded model; they run in "
                    "the default gate (without --so8t-model) and say nothing about the checkpoint under test")
    model = default_checkpoint(variant)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        # --so8t-heavy: the variants are as small as the embedded model, so its heavy tests run on them too
        [sys.executable, "-m", "pytest", f"--so8t-model={model}", "--so8t-heavy", *SELECTIONS[variant], "-q", "-n", "0",
         "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'bt'}", "-rs"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200, check=False,
    )
    out = run.stdout + run.stderr
    summary = out.strip().splitlines()[-1] if out.strip() else ""
    assert run.returncode == 0, out[-6000:]
    assert re.search(r"\d+ passed", summary), summary
    assert not re.search(r"\d+ (failed|errors?)\b", summary), summary
    # a skip must be one the parent gate has too (no CUDA here, no converter named), or a check of the tool
    # itself (it reads no checkpoint, so no shape can break it; the parent gate runs it); any other would hide
    # a shape assumption
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert all(any(why in line for why in ("CUDA", "LLAMA_CPP_CONVERTER is not set", TOOL_CHECK_SKIP))
               for line in skips), skips
