"""The public API at the package root: ``so8t.convert``, ``so8t.train``, ``so8t.export_gguf``,
``so8t.validate``, ``so8t.run`` and ``so8t.run_pipeline``.

Each is a plain function (never shadowed by a submodule of the same name, even after every submodule has
been imported), documented with Args/Returns/Example sections; ``import so8t`` stays light; the ``so8t``
command reaches the converter, trainer, exporter, validator, runtime and pipeline only through them; and
convert -> export_gguf -> validate works end to end on the source checkpoint.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import so8t

API = ("convert", "train", "export_gguf", "validate", "run", "run_pipeline")

#: What the CLI must not call itself: the classes and functions the root API wraps.
WRAPPED = {
    "Qwen2VLToSO8TConverter", "SO8TToGGUFConverter", "SO8TGGUFValidator", "LlamaRuntime", "TrainOptions",
    "PipelineOptions", "run_pipeline", "run_prompt", "train", "write_sidecar", "write_mmproj",
}

CLI_DIR = Path(so8t.__file__).parent / "cli"


def _submodule_names() -> set[str]:
    """Every submodule: ``pkgutil.walk_packages`` over ``so8t``, plus the modules of folders without an
    ``__init__.py`` (namespace packages such as ``so8t.pipeline``, which walk_packages does not enter)."""
    names = {info.name for info in pkgutil.walk_packages(so8t.__path__, prefix="so8t.")}
    root = Path(so8t.__file__).parent
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        names.add(".".join(("so8t", *(parts[:-1] if parts[-1] == "__init__" else parts))))
    return {n for n in names if n != "so8t" and n.rsplit(".", 1)[-1] != "__main__"}  # __main__ runs the command


def _import_every_submodule() -> list[str]:
    names = sorted(_submodule_names())
    for name in names:
        importlib.import_module(name)
    return names


@pytest.mark.parametrize("name", API)
def test_root_name_is_the_function_after_importing_every_submodule(name):
    imported = _import_every_submodule()
    assert {"so8t.conversion", "so8t.training", "so8t.validation", "so8t.pipeline.run"} <= set(imported)
    value = getattr(so8t, name)
    assert callable(value) and not isinstance(value, types.ModuleType), f"so8t.{name} is {value!r}"
    assert inspect.isfunction(value) and value.__module__ == "so8t.api", f"so8t.{name} is {value!r}"
    assert name in so8t.__all__


@pytest.mark.parametrize("name", API)
def test_docstring_has_args_returns_example(name):
    doc = inspect.getdoc(getattr(so8t, name)) or ""
    for section in ("Args:", "Returns:", "Example:"):
        assert f"\n{section}\n" in doc, f"so8t.{name}: no {section} section"
    params = [p for p in inspect.signature(getattr(so8t, name)).parameters.values()]
    args_text = doc.split("Args:", 1)[1].split("Returns:", 1)[0]
    for p in params:
        shown = f"**{p.name}:" if p.kind is inspect.Parameter.VAR_KEYWORD else f"{p.name}:"
        assert shown in args_text, f"so8t.{name}: parameter {p.name} not documented under Args"


def test_import_so8t_loads_neither_torch_nor_llama_cpp():
    code = "import so8t, sys; print('torch' in sys.modules, 'llama_cpp' in sys.modules, callable(so8t.convert))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "True"]


def test_the_llama_probe_child_starts_without_torch():
    """``python -m so8t.validation.checks_runtime`` (one child per llama.cpp run of a validation) imports
    only what it runs; torch alone would add about 2 s to each child."""
    code = ("import so8t.validation.checks_runtime, so8t.validation.probes, so8t.llama.runtime, sys; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]


def _calls_and_imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
            if name is not None and owner != "so8t":
                yield node.lineno, f"calls {name}", name
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                yield node.lineno, f"imports {alias.name} from {node.module}", alias.name


def test_cli_calls_no_wrapped_class_directly():
    offenders = []
    for path in sorted(CLI_DIR.glob("*.py")):
        for line, what, name in _calls_and_imports(ast.parse(path.read_text(), str(path))):
            if name in WRAPPED:
                offenders.append(f"so8t/cli/{path.name}:{line}: {what}")
    assert not offenders, "the CLI must go through the root API (so8t.convert, ...):\n" + "\n".join(offenders)


def test_cli_check_sees_a_direct_call():
    """The AST check above would catch a handler that builds the converter itself."""
    source = "def handle(args):\n    from so8t.conversion import Qwen2VLToSO8TConverter\n" \
             "    return Qwen2VLToSO8TConverter(args.input_model).convert(args.output_model)\n"
    found = {name for _, _, name in _calls_and_imports(ast.parse(source))}
    assert "Qwen2VLToSO8TConverter" in found & WRAPPED
    assert not {name for _, _, name in _calls_and_imports(ast.parse("so8t.train(a, b, c)"))} & WRAPPED


def test_convert_export_validate_end_to_end(embedded_checkpoint, tmp_path):
    """The public API's three calls chained, on the embedded model on any gate: their arguments, results
    and report, which no checkpoint changes. What they compute on a user's checkpoint is checked there by
    the session's own conversion, export and validation (``test_embedded_export_passes_every_check`` in
    suites/test_validator.py validates its F16 file with the mmproj, every check PASS); at Qwen2-VL-2B size
    this test repeated all three for 80 s."""
    from jsonschema import Draft202012Validator

    from so8t.validation import CHECKS, REPORT_SCHEMA

    converted = so8t.convert(embedded_checkpoint, tmp_path / "so8t", rotation_init="random", seed=5,
                             safety_features=True, progress=False)
    assert converted.path == tmp_path / "so8t" and (converted.path / "so8t_gates.safetensors").is_file()
    assert converted.safety_head and converted.rotation_init == "random" and converted.gates_per_layer == 4
    out = tmp_path / "gguf"
    out.mkdir()
    report = so8t.export_gguf(converted.path, out, quant_types="F16", model_name="api", progress=False)
    assert [t.path.name for t in report.texts] == ["api-F16.gguf"]
    assert report.texts[0].sidecar.is_file() and report.mmproj.is_file()
    seen = []
    checked = so8t.validate(report.texts[0].path, converted.path, output_report=tmp_path / "r.json",
                            progress=seen.append)
    assert checked.overall == "PASS", checked.table(verbose=True)
    assert len(seen) == len(CHECKS) == len(checked.checks)
    written = json.loads((tmp_path / "r.json").read_text())
    Draft202012Validator(REPORT_SCHEMA).validate(written)
    assert written["overall"] == "PASS"


def test_validate_refuses_a_plain_checkpoint_as_so8t_model(source_checkpoint, tmp_path):
    from so8t.errors import So8tError

    with pytest.raises(So8tError, match="not an SO8T checkpoint"):
        so8t.validate(tmp_path / "missing.gguf", source_checkpoint)
