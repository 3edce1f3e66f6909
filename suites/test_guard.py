"""The guard: the safety head decides from the generation's own prefill, before the first token.

``LlamaRuntime.generate(guard=...)`` decodes the prompt up to its last token, then that token with
hidden-state output on, hands the final-norm hidden state to the guard and, unless it refuses, generates
from the same context. These tests check that the hidden state is the one the head is trained on (the
all-positions prefill of ``LlamaRuntime.hidden_states`` reads the same), that splitting the prefill changes
no generated token, that a refusal generates nothing, and what ``so8t run`` prints and returns.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from so8t.llama.runner import blocks
from suites.float_bounds import f32_chain_bound

PROMPT = "How do I kill a Python process that is stuck?"


@pytest.mark.llama
def test_the_guard_reads_the_hidden_state_of_the_same_prefill(gguf_text, source_reader):
    """F32 KV cache on both paths: they differ only in how ggml sums in float32 (the prompt decoded in one
    batch, or up to its last token and then that token alone), within the float32 bound of
    test_llama_parity.py's hidden-state test, ``4 L sqrt(K_max) 2^-24 max|h|``. (With the default F16 cache
    a different summation order lands some values on the other side of a float16 rounding boundary, which
    trained weights amplify: docs/reference.md section 16.)"""
    from so8t.llama.chat import chat_prompt
    from so8t.llama.runtime import LlamaRuntime

    cfg = source_reader.text_config
    with LlamaRuntime(gguf_text["F32"].path, n_ctx=512, n_threads=2, f32_kv=True) as rt:
        ids = rt.tokenize(chat_prompt(PROMPT))
        seen = []
        guarded = rt.generate(ids, max_tokens=6, stop_at_eos=False, guard=lambda h: seen.append(h) or True)
        plain = rt.generate(ids, max_tokens=6, stop_at_eos=False)
        separate = rt.hidden_states(ids)[-1]
    assert len(seen) == 1 and seen[0].shape == separate.shape
    scale = float(np.abs(separate).max())
    bound = f32_chain_bound(cfg) * scale
    assert np.abs(seen[0] - separate).max() <= bound, (np.abs(seen[0] - separate).max(), bound)
    assert guarded.tokens == plain.tokens and not guarded.guarded  # splitting the prefill changes nothing


@pytest.mark.llama
def test_a_refusing_guard_generates_nothing(gguf_text):
    from so8t.llama import api as llama_api
    from so8t.llama.chat import chat_prompt
    from so8t.llama.runtime import LlamaRuntime

    with LlamaRuntime(gguf_text["Q8_0"].path, n_ctx=512, n_threads=2) as rt:
        ids = rt.tokenize(chat_prompt("How do I make a pipe bomb at home?"))
        gen = rt.generate(ids, max_tokens=8, guard=lambda h: False)
        perf = llama_api.perf(rt.llm)
    assert gen.guarded and gen.tokens == [] and gen.text == ""
    # llama.cpp decoded the prompt's tokens and spent no time generating (its perf struct reports at least
    # one eval, so the count is not the figure to read)
    assert perf.prompt_tokens == len(ids) and perf.gen_ms == 0.0, perf


@pytest.mark.parametrize(("label", "policy", "stopped"), [
    ("REFUSE", "answer", True), ("REFUSE", "refuse", True), ("ESCALATE", "answer", False),
    ("ESCALATE", "refuse", True), ("ALLOW", "answer", False), ("ALLOW", "refuse", False),
])
def test_the_escalate_policy(label, policy, stopped):
    assert blocks(label, policy) is stopped


class _Head:
    """A head with a fixed verdict (the trained head's verdicts are checked on real weights, see docs)."""

    def __init__(self, label):
        self.label = label

    def verdict(self, hidden):
        probs = {c: float(c == self.label) for c in ("ALLOW", "ESCALATE", "REFUSE")}
        return SimpleNamespace(label=self.label, probabilities=probs)


@pytest.mark.llama
@pytest.mark.parametrize(("label", "argv", "rc"), [
    ("REFUSE", [], 4),
    ("ESCALATE", [], 0),
    ("ESCALATE", ["--on-escalate", "refuse"], 4),
    ("REFUSE", ["--no-guard"], 0),
])
def test_so8t_run_behind_the_guard(gguf_text, monkeypatch, capsys, label, argv, rc):
    from so8t.cli import main
    from so8t.llama import runner
    from so8t.llama.runtime import LlamaRuntime

    monkeypatch.setattr(runner, "safety_status", lambda side: "verdict")
    monkeypatch.setattr(LlamaRuntime, "safety_head", lambda self: _Head(label))
    got = main(["run", "--model", str(gguf_text["Q8_0"].path), "--prompt", PROMPT, "--max-tokens", "3",
                "--refusal-text", "No.", *argv])
    out, err = capsys.readouterr()
    assert got == rc, (out, err)
    if rc == 4:
        assert out.splitlines()[0] == "No." and "tok/s" not in err and "refused before the first token" in out
    elif "--no-guard" in argv:
        assert "guard off" in err and "safety: REFUSE" not in out
    else:
        assert f"safety: {label} (" in out and "answered" in out and "tok/s" in err
