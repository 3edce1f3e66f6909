"""llama.cpp inference per quant type: prompt and generation tokens/s of our folded files.

Workload (REFERENCE section 7): a fixed 128-token prompt, then 32 greedily generated tokens, KV cache
cleared before each round. Tokens/s come from llama.cpp's own perf counters (``llama_perf_context``:
``n_p_eval / t_p_eval`` and ``n_eval / t_eval``); the benchmark's own time is the whole round.

Baseline, measured in the same session and interleaved round by round (pedantic's untimed ``setup``):
the *unrotated* model (identity gates) exported to the same quant type. Both files have identical
shapes and types, so folding must cost nothing at run time: ``gen_tps_ratio`` = ours / reference
(target >= 0.98), likewise ``prompt_tps_ratio``. The SO8T file has seeded random gates, so its
weights really are rotated.

llama.cpp is driven through llama-cpp-python directly (``Llama.eval`` plus an argmax), so the
measurement contains no sampling or detokenisation work.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

INFER_QUANTS = ("F16", "Q8_0", "Q4_0", "Q6_K")
N_PROMPT, N_GEN = 128, 32
PROMPT_SEED = 5


@pytest.fixture(scope="session")
def inference_files(bench, so8t_random, so8t_identity) -> dict[tuple[str, str], object]:
    """Text GGUFs of every benchmarked quant type, for the SO8T ("so8t") and unrotated ("ref") models."""
    from so8t.gguf.export import SO8TToGGUFConverter

    files = {}
    for kind, checkpoint in (("so8t", so8t_random), ("ref", so8t_identity)):
        out = bench.workdir / f"infer-{kind}"
        out.mkdir()
        report = SO8TToGGUFConverter(checkpoint, progress=False).export(
            out,
            quant_types=list(INFER_QUANTS),
            model_name=kind,
            mmproj=False,
            sidecar=False,
            n_threads=bench.threads,
        )
        for text in report.texts:
            files[(kind, text.quant)] = text.path
    return files


def prompt_ids(vocab_size: int) -> list[int]:
    rng = np.random.default_rng(PROMPT_SEED)
    return rng.integers(0, min(vocab_size, 151643), N_PROMPT).tolist()  # ordinary tokens only


def load(path, threads: int):
    from llama_cpp import Llama

    return Llama(
        model_path=str(path),
        n_ctx=N_PROMPT + N_GEN + 16,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=False,
        verbose=False,
    )


def generate(llm, ids: list[int]) -> dict[str, float]:
    """One round: prompt, then N_GEN greedy tokens; llama.cpp's perf counters of this round."""
    import llama_cpp

    llm.reset()
    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
    llama_cpp.llama_perf_context_reset(llm.ctx)
    llm.eval(ids)
    for _ in range(N_GEN):
        llm.eval([int(np.argmax(last_logits(llm)))])
    finite = bool(np.isfinite(last_logits(llm)).all())
    perf = llama_cpp.llama_perf_context(llm.ctx)
    return {
        "n_p_eval": perf.n_p_eval,
        "n_eval": perf.n_eval,
        "prompt_tps": 1e3 * perf.n_p_eval / perf.t_p_eval_ms,
        "gen_tps": 1e3 * perf.n_eval / perf.t_eval_ms,
        "last_logits_finite": finite,
    }


def last_logits(llm) -> np.ndarray:
    """Logits of the last evaluated token, read from llama.cpp (this also closes its perf timing)."""
    import llama_cpp

    pointer = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),))


@pytest.mark.parametrize("quant", INFER_QUANTS)
def test_inference(benchmark, bench, bench_model, tools, inference_files, quant):
    ours_path, ref_path = inference_files[("so8t", quant)], inference_files[("ref", quant)]
    ours, ref = load(ours_path, bench.threads), load(ref_path, bench.threads)
    ids = prompt_ids(ours.n_vocab())
    generate(ours, ids), generate(ref, ids)  # untimed warm-up: page in the weights of both files
    ours_rounds: list[dict] = []
    ref_rounds: list[dict] = []
    rss = tools.PeakRSS()

    def setup():
        ref_rounds.append(generate(ref, ids))

    def run():
        with rss:
            ours_rounds.append(generate(ours, ids))

    rounds = max(bench.rounds, 5) if bench.model == "embedded" else bench.rounds
    benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)

    for perf in ours_rounds + ref_rounds:  # the counters describe exactly the workload asked for
        assert perf["n_p_eval"] == N_PROMPT and perf["n_eval"] == N_GEN, perf
        assert perf["last_logits_finite"]
    med = {key: tools.median([r[key] for r in ours_rounds]) for key in ("prompt_tps", "gen_tps")}
    ref_med = {key: tools.median([r[key] for r in ref_rounds]) for key in ("prompt_tps", "gen_tps")}
    benchmark.extra_info.update(
        {
            "model": bench.model,
            "quant": quant,
            "n_prompt": N_PROMPT,
            "n_gen": N_GEN,
            "threads": bench.threads,
            "prompt_tps": round(med["prompt_tps"], 2),
            "gen_tps": round(med["gen_tps"], 2),
            "ref_prompt_tps": round(ref_med["prompt_tps"], 2),
            "ref_gen_tps": round(ref_med["gen_tps"], 2),
            "prompt_tps_ratio": round(med["prompt_tps"] / ref_med["prompt_tps"], 3),
            "gen_tps_ratio": round(med["gen_tps"] / ref_med["gen_tps"], 3),
            "file_size": ours_path.stat().st_size,
            "ref_file_size": ref_path.stat().st_size,
            "peak_rss_mb": round(rss.mb, 1),
        }
    )
    assert all(math.isfinite(v) for v in (*med.values(), *ref_med.values()))
