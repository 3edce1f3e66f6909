"""``so8t.llama.api``: the one home of llama-cpp-python's private and low-level symbols.

An installed llama-cpp-python that lacks one of them must fail at first use with a one-line
``LlamaApiError`` naming the symbol, not with an ``AttributeError`` deep inside an export.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from so8t.errors import LlamaApiError
from so8t.llama import api as llama_api

ROOT = Path(__file__).resolve().parent.parent


def test_the_installed_llama_cpp_python_has_every_symbol():
    module = llama_api.api()
    llama_api.check_module(module)
    llama_api.check_ggml(llama_api.ggml())


@pytest.mark.parametrize(
    ("owner", "attribute", "dotted"),
    [
        ("llama_cpp", "llama_get_logits_ith", "llama_get_logits_ith"),
        ("llama_cpp._internals.LlamaBatch", "set_batch", "_internals.LlamaBatch.set_batch"),
        ("llama_cpp.mtmd_cpp", "mtmd_encode_chunk", "mtmd_cpp.mtmd_encode_chunk"),
    ],
)
def test_a_missing_symbol_is_one_typed_line(monkeypatch, owner, attribute, dotted):
    import importlib

    module_name, _, cls = owner.partition("._internals.")
    target = importlib.import_module(module_name if not cls else "llama_cpp._internals")
    if cls:
        target = getattr(target, cls)
    monkeypatch.delattr(target, attribute)
    llama_api.api.cache_clear()
    try:
        with pytest.raises(LlamaApiError) as info:
            llama_api.api()
    finally:
        llama_api.api.cache_clear()
    message = str(info.value)
    assert f"lacks llama_cpp.{dotted}" in message and "llama-cpp-python>=0.3.36,<0.4" in message
    assert "\n" not in message


def test_a_missing_ggml_function_is_one_typed_line():
    class Lib:
        ggml_quantize_chunk = ggml_row_size = ggml_validate_row_data = object()

    with pytest.raises(LlamaApiError, match="lacks ggml_quantize_requires_imatrix") as info:
        llama_api.check_ggml(Lib())
    assert "\n" not in str(info.value)


def test_a_missing_private_attribute_of_a_loaded_model_is_one_typed_line():
    class NotQuiteLlama:
        def reset(self):
            pass

    with pytest.raises(LlamaApiError, match="has no _ctx attribute"):
        llama_api.restart(NotQuiteLlama())


def test_no_other_module_touches_llama_cpp_internals():
    """Private attributes and raw ctypes calls of llama-cpp-python appear only in so8t/llama/api.py and images.py."""
    private = re.compile(
        r"llama_cpp\.(?:_\w+|llama_(?!chat_format\b)\w+|mtmd_cpp|LLAMA_\w+)|from llama_cpp(?:\._\w+| import _)"
        r"|\._ctx\b|\._batch\b"
    )
    offenders = []
    for folder in ("so8t", "suites", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if (path.parent.name == "llama" and path.name in ("api.py", "images.py")) or path.name == "test_llama_api.py":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if private.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
