"""llama.cpp inference per quant type: prompt and generation tokens/s of our folded files.

Workload (docs/reference.md section 7): a fixed 128-token prompt, then 32 greedily generated tokens, KV cache
cleared before each round. Tokens/s come from llama.cpp's own perf counters (``llama_perf_context``:
``n_p_eval / t_p_eval`` and ``n_eval / t_eval``); the benchmark's own time is the whole round.

Baseline, measured in the same session and interleaved round by round (pedantic's untimed ``setup``):
the *unrotated* model (the source checkpoint, i.e. identity gates) exported to the same quant type.
Both files have identical shapes and types, so folding must cost nothing at run time. The rounds run
ref, ours, ref, ours, ..., ref: every round of ours sits between two reference rounds, and its *paired
ratio* is ours / the mean of those two neighbours, which cancels the slow drift of a shared machine
(a ratio of two medians does not: +-3% swings between identical files were seen that way). Each round
loads its model alone (and warms it up, untimed): with both models loaded at once, whichever was loaded
first generated ~5% slower, in either order (Q4_0, full size), which biased the ratio.
``gen_tps_ratio`` = median paired ratio of generation tokens/s (target >= 0.98), likewise
``prompt_tps_ratio``; the medians of both sides are recorded too. The SO8T file has seeded random
gates, so its weights really are rotated.

llama.cpp runs through ``so8t.llama.runtime.LlamaRuntime.generate`` (greedy argmax, EOS ignored so every
round generates exactly 32 tokens); llama.cpp evaluates 31 of them one by one (the last one is not fed
back), which is what ``gen_tps`` counts.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

INFER_QUANTS = ("F16", "Q8_0", "Q4_0", "Q6_K")
N_PROMPT, N_GEN = 128, 32
PROMPT_SEED = 5


def export_pair(bench, so8t_random, out, quant: str) -> tuple[Path, Path]:
    """(ours, reference) text GGUFs of ``quant``: the random-gate SO8T model and the source checkpoint
    itself (a plain Qwen2-VL checkpoint exports unrotated, i.e. as identity gates)."""
    from so8t.gguf.export import SO8TToGGUFConverter

    paths = []
    for name, checkpoint in (("so8t", so8t_random), ("ref", bench.source)):
        report = SO8TToGGUFConverter(checkpoint, progress=False).export(
            out, quant_types=[quant], model_name=name, mmproj=False, sidecar=False, n_threads=bench.threads
        )
        paths.append(report.texts[0].path)
    return paths[0], paths[1]


def checkpoint_vocab(checkpoint: Path) -> int:
    import json

    from so8t.gguf.text import TextHParams

    return TextHParams.from_config(json.loads((checkpoint / "config.json").read_text())).vocab_size


def prompt_ids(vocab_size: int) -> list[int]:
    rng = np.random.default_rng(PROMPT_SEED)
    return rng.integers(0, min(vocab_size, 151643), N_PROMPT).tolist()  # ordinary tokens only


def load(path, threads: int):
    from so8t.llama.runtime import LlamaRuntime

    return LlamaRuntime(path, n_ctx=N_PROMPT + N_GEN + 16, n_threads=threads)


def generate(runtime, ids: list[int]) -> dict[str, float]:
    """One round: prompt, then N_GEN greedy tokens (EOS ignored); llama.cpp's perf counters of this round."""
    result = runtime.generate(ids, max_tokens=N_GEN, stop_at_eos=False)
    return {
        "prompt_tokens": result.prompt_tokens,
        "generated": len(result.tokens),
        "prompt_tps": result.prompt_tokens_per_s,
        "gen_tps": result.gen_tokens_per_s,
    }


def measure_alone(path: Path, threads: int, ids: list[int]) -> dict[str, float]:
    """Load ``path`` with no other model loaded, warm it up, measure one round, close it."""
    with load(path, threads) as runtime:
        generate(runtime, ids)
        return generate(runtime, ids)


def paired_ratio(ours: list[dict], ref: list[dict], key: str, median) -> float:
    """Median over rounds i of ``ours[i][key]`` / the mean of ``ref[i][key]`` and ``ref[i + 1][key]`` (the
    reference rounds just before and just after it)."""
    assert len(ref) == len(ours) + 1, (len(ref), len(ours))
    return median([o[key] / ((a[key] + b[key]) / 2) for o, a, b in zip(ours, ref, ref[1:])])


@pytest.mark.parametrize("quant", INFER_QUANTS)
def test_inference(benchmark, bench, bench_model, tools, so8t_random, scratch, quant):
    ours_path, ref_path = export_pair(bench, so8t_random, scratch, quant)  # untimed
    ours_rounds: list[dict] = []
    ref_rounds: list[dict] = []
    rss = tools.PeakRSS()
    ids = prompt_ids(checkpoint_vocab(so8t_random))
    held: list = []  # the loaded SO8T model of the current round

    def setup():
        while held:
            held.pop().close()
        ref_rounds.append(measure_alone(ref_path, bench.threads, ids))
        held.append(load(ours_path, bench.threads))
        generate(held[0], ids)  # untimed warm-up: pages in the weights

    def run():
        with rss:
            ours_rounds.append(generate(held[0], ids))

    rounds = max(bench.rounds, 5) if bench.model == "embedded" else bench.rounds
    try:
        benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)
    finally:
        while held:
            held.pop().close()
    ref_rounds.append(measure_alone(ref_path, bench.threads, ids))  # the reference round after the last

    for perf in ours_rounds + ref_rounds:  # every round did exactly the workload asked for
        assert perf["prompt_tokens"] == N_PROMPT and perf["generated"] == N_GEN, perf
        assert perf["prompt_tps"] > 0 and perf["gen_tps"] > 0, perf
    med = {key: tools.median([r[key] for r in ours_rounds]) for key in ("prompt_tps", "gen_tps")}
    ref_med = {key: tools.median([r[key] for r in ref_rounds]) for key in ("prompt_tps", "gen_tps")}
    ratios = {key: paired_ratio(ours_rounds, ref_rounds, key, tools.median) for key in ("prompt_tps", "gen_tps")}
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
            "prompt_tps_ratio": round(ratios["prompt_tps"], 3),
            "gen_tps_ratio": round(ratios["gen_tps"], 3),
            "gen_tps_medians_ratio": round(med["gen_tps"] / ref_med["gen_tps"], 3),
            "rounds": len(ours_rounds),
            "file_size": ours_path.stat().st_size,
            "ref_file_size": ref_path.stat().st_size,
            "peak_rss_mb": round(rss.mb, 1),
        }
    )
    assert all(math.isfinite(v) for v in (*med.values(), *ref_med.values()))
