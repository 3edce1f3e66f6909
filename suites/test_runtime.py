"""``so8t.llama.runtime`` and ``so8t run``: generation with llama.cpp's perf counters, the safety verdict from
the sidecar head on llama.cpp's final hidden state, images through the mmproj, and load errors."""

from __future__ import annotations

import numpy as np
import pytest

from so8t.errors import RuntimeLoadError
from suites.float_bounds import f32_chain_bound

pytestmark = pytest.mark.llama


class TestF32Runtime:
    """The F32 file loaded once for these tests and released after them (class scope), so no later test of
    the module holds its mapping beside its own model: on a real checkpoint the F32 file is 4 bytes a
    parameter."""

    @pytest.fixture(scope="class")
    @classmethod
    def rt_f32(cls, gguf_text):
        from so8t.llama.runtime import LlamaRuntime

        with LlamaRuntime(
            gguf_text["F32"].path, sidecar=gguf_text["F32"].sidecar, f32_kv=True, n_ctx=256, n_threads=2
        ) as rt:
            yield rt

    def test_generate_reports_llama_cpp_rates(self, rt_f32, parity_ids):
        gen = rt_f32.generate(parity_ids, max_tokens=5, stop_at_eos=False)
        assert len(gen.tokens) == 5
        assert gen.prompt_tokens == len(parity_ids)
        assert gen.prompt_tokens_per_s > 0 and gen.gen_tokens_per_s > 0
        assert gen.text == rt_f32.detokenize(gen.tokens)

    def test_generate_from_text_equals_generate_from_ids(self, rt_f32, parity_ids, hf_tokenizer):
        text = hf_tokenizer.decode(parity_ids)
        assert rt_f32.generate(text, max_tokens=3).tokens == rt_f32.generate(parity_ids, max_tokens=3).tokens

    def test_safety_verdict_matches_pytorch_head(self, rt_f32, parity_ids, reference_eps0, gguf_text, source_reader):
        """The sidecar head on llama.cpp's last hidden state gives the PyTorch model's safety logits within
        the hidden-state bound carried through the head: |dz| <= ||W2||_inf * 1.13 * ||W1||_inf * |dh|
        (GELU is 1.13-Lipschitz), |dh| the float32 chain bound of test_llama_parity.py's hidden-state test
        (both sides apply the head in float64)."""
        from so8t.gguf.sidecar_reader import read_sidecar

        verdict = rt_f32.safety(parity_ids)
        ref = reference_eps0["safety"]
        assert verdict is not None and ref is not None
        w = read_sidecar(gguf_text["F32"].sidecar).safety_weights
        norm1 = np.abs(w["0.weight"]).sum(axis=1).max()
        norm2 = np.abs(w["2.weight"]).sum(axis=1).max()
        hidden = reference_eps0["hidden"]
        dh = f32_chain_bound(source_reader.text_config) * float(np.abs(hidden).max())
        bound = norm2 * 1.13 * norm1 * dh + 2.0**-20
        assert np.abs(np.asarray(verdict.logits, dtype=np.float64) - ref.reshape(-1)).max() <= bound
        assert verdict.label == ("ALLOW", "ESCALATE", "REFUSE")[int(np.argmax(ref))]
        assert sum(verdict.probabilities.values()) == pytest.approx(1.0, abs=1e-9)


def test_no_sidecar_no_verdict(gguf_text, parity_ids):
    from so8t.llama.runtime import LlamaRuntime

    with LlamaRuntime(gguf_text["Q8_0"].path, n_ctx=128, n_threads=2) as rt:
        assert rt.safety(parity_ids[:8]) is None


def test_default_sidecar_is_found_next_to_the_model(gguf_text):
    from so8t.llama.runtime import default_sidecar

    assert default_sidecar(gguf_text["Q4_K_M"].path) == gguf_text["Q4_K_M"].sidecar
    assert default_sidecar(gguf_text["Q4_K_M"].sidecar) is None  # a sidecar has no sidecar
    assert default_sidecar(gguf_text["Q4_K_M"].path.with_name("absent.gguf")) is None


def test_missing_and_corrupt_files_are_load_errors(tmp_path):
    from so8t.llama.runtime import LlamaRuntime

    with pytest.raises(RuntimeLoadError, match="file not found"):
        LlamaRuntime(tmp_path / "absent.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(RuntimeLoadError, match="could not load"):
        LlamaRuntime(bad, n_ctx=64)


def test_cli_run_prints_text_rates_and_safety(gguf_text, capsys):
    from so8t.cli import main

    rc = main(["run", "--model", str(gguf_text["Q8_0"].path), "--prompt", "こんにちは", "--max-tokens", "4"])
    out, err = capsys.readouterr()
    assert rc == 0 and out.strip()
    assert "safety: guard not active" in err and "tok/s" in err  # the fixture's head was never trained


def test_cli_run_image_needs_mmproj(gguf_text, capsys):
    from so8t.cli import main

    rc = main(["run", "--model", str(gguf_text["F16"].path), "--prompt", "hi", "--image", "x.png"])
    assert rc == 2 and "--mmproj" in capsys.readouterr().err


def test_image_through_mmproj(gguf_text, mmproj_f16, tmp_path):
    """Multimodal smoke: the Q8_0 text file with the mmproj of the same SO8T model answers about a small
    image through llama.cpp's multimodal handler (random weights: any text, but the image path runs; Q8_0
    because the text type does not matter here and it holds half what F16 does at a real size)."""
    from PIL import Image

    from so8t.llama.runtime import LlamaRuntime

    image = tmp_path / "square.png"
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(image)
    with LlamaRuntime(gguf_text["Q8_0"].path, mmproj=mmproj_f16, n_ctx=512, n_threads=2) as rt:
        answer = rt.describe_image(image, "What is in the picture?", max_tokens=4)
    assert isinstance(answer, str)
