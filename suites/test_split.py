"""``so8t export --split-max-size``: gguf-split's parts, loaded by llama.cpp; and the bundle's refusals.

Checks of the tool itself, on the embedded model (``embedded_random_dir``) on any gate: how the writer cuts a
file into parts and keys them does not depend on the checkpoint (``plan_parts`` packs tensor sizes, pinned
by hand below), and on ``--so8t-model`` the split would be one more whole-model export of the user's
checkpoint (40 s for the 0.5 B real-weights model). The whole file they are compared with is this module's
own export of the same directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFReader

from so8t.cli import main
from so8t.gguf.split import parse_split_size, plan_parts

SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")


PART = "-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].gguf"
MODEL_NAME = "split-probe"
#: "<|im_start|>user\nHello, world! What is 2+2?" in the Qwen2 tokenizer the embedded model ships.
PROBE_IDS = [151644, 872, 198, 9707, 11, 1879, 0, 3555, 374, 220, 17, 10, 17, 30]


@pytest.fixture(scope="module")
def whole_q8_0(embedded_random_dir, tmp_path_factory) -> Path:
    """The Q8_0 file of the embedded random-gate conversion, in one piece (the CLI, as a user runs it)."""
    out = tmp_path_factory.mktemp("whole")
    assert main(["export", "--input-model", str(embedded_random_dir), "--output-dir", str(out), "--quantization",
                 "Q8_0", "--model-name", MODEL_NAME, "--no-mmproj", "--no-bundle", "--quiet"]) == 0
    return out / f"{MODEL_NAME}-Q8_0.gguf"


@pytest.fixture(scope="module")
def split_size(whole_q8_0) -> int:
    """A third of the Q8_0 file's tensor bytes without its largest tensor: at least three parts at any model
    size (the largest tensor, the embedding in a small model, may need a part of its own)."""
    sizes = [int(t.n_bytes) + (-int(t.n_bytes)) % 32 for t in GGUFReader(whole_q8_0).tensors]
    return (sum(sizes) - max(sizes)) // 3


@pytest.fixture(scope="module")
def split_export(embedded_random_dir, split_size, tmp_path_factory):
    """The same export in parts of <= split_size bytes (same model name, so the metadata matches)."""
    out = tmp_path_factory.mktemp("split")
    code = main(["export", "--input-model", str(embedded_random_dir), "--output-dir", str(out), "--quantization",
                 "Q8_0", "--model-name", MODEL_NAME, "--no-mmproj", "--split-max-size", str(split_size), "--quiet"])
    assert code == 0
    return out, sorted(p for p in out.glob("*-Q8_0" + PART) if not p.name.endswith(".so8t.gguf"))


def _value(reader, key):
    return reader.fields[key].contents()


def test_parts_are_named_and_keyed_as_gguf_split_writes_them(split_export, split_size, whole_q8_0):
    out, parts = split_export
    n = len(parts)
    assert n >= 3
    stem = whole_q8_0.stem
    assert [p.name for p in parts] == [f"{stem}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]
    assert not (out / f"{stem}.gguf").exists()
    whole = GGUFReader(whole_q8_0)
    readers = [GGUFReader(p) for p in parts]
    for i, r in enumerate(readers):
        assert [_value(r, k) for k in SPLIT_KEYS] == [i, n, len(whole.tensors)]
        if i:  # metadata lives in the first part only
            assert set(r.fields) - {k for k in r.fields if k.startswith("GGUF.")} == set(SPLIT_KEYS)
        assert sum(int(t.n_bytes) + (-int(t.n_bytes)) % 32 for t in r.tensors) <= split_size or len(r.tensors) == 1
    first = readers[0]
    for key in whole.fields:
        if not key.startswith("GGUF."):
            assert first.fields[key].contents() == whole.fields[key].contents(), key
    tensors = [t for r in readers for t in r.tensors]
    assert [t.name for t in tensors] == [t.name for t in whole.tensors]
    for ours, theirs in zip(tensors, whole.tensors):
        assert ours.tensor_type == theirs.tensor_type and np.array_equal(ours.data, theirs.data), ours.name


def test_llama_cpp_loads_the_split_file(split_export, whole_q8_0):
    """llama.cpp opens the first part, finds the others, and computes the whole file's logits."""
    from so8t.llama.api import load

    def logits(path):
        llm = load(path, n_ctx=64, n_threads=2, logits_all=True)
        try:
            llm.eval(PROBE_IDS)
            return np.array(llm.scores[:24])
        finally:
            llm.close()

    _, parts = split_export
    np.testing.assert_array_equal(logits(parts[0]), logits(whole_q8_0))


def test_the_bundle_lists_every_part(split_export):
    out, parts = split_export
    froms = [line.split(None, 1)[1] for line in (out / "Modelfile").read_text().splitlines() if line.startswith("FROM ")]
    assert froms == [f"./{p.name}" for p in parts]
    sums = {line.split("  ", 1)[1] for line in (out / "SHA256SUMS").read_text().splitlines()}
    assert {p.name for p in parts} <= sums
    assert f"llama-server -m {parts[0].name} --port 8080" in (out / "README.md").read_text()


def test_plan_parts_by_hand():
    # padded to 32 bytes: 128, 64, 64, 32; limit 96: 128 alone (too big for any part), then 64, then 64 + 32
    assert plan_parts([100, 40, 40, 10], 96) == [[0], [1], [2, 3]]
    assert plan_parts([10, 10], 10**6) == [[0, 1]]


@pytest.mark.parametrize(("text", "value"), [("2G", 2 * 10**9), ("500M", 500 * 10**6), ("2000000", 2 * 10**6)])
def test_sizes_in_gguf_split_units(text, value):
    assert parse_split_size(text) == value


@pytest.mark.parametrize("size", ["0", "-5", "2X", "1.5G", "abc", ""])
def test_a_bad_size_is_one_line_and_writes_nothing(size, embedded_random_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["export", "--input-model", str(embedded_random_dir), "--output-dir", str(out), "--split-max-size", size,
                 "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--split-max-size" in err and len(err.splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize("name", ["README.md", "Modelfile", "SHA256SUMS"])
def test_a_users_own_file_is_not_replaced(name, embedded_random_dir, tmp_path, capsys):
    (tmp_path / name).write_text("my own notes\n")
    code = main(["export", "--input-model", str(embedded_random_dir), "--output-dir", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and name in err and "not written by so8t" in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert (tmp_path / name).read_text() == "my own notes\n"
