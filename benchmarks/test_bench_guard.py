"""What the guard costs: time to the first token with the safety head deciding first, against without it.

Workload: a 128-token prompt and one generated token (``LlamaRuntime.generate(max_tokens=1)``: the prefill
and the first token, what a user waits for), Q8_0, the benchmarked checkpoint converted with a safety
head (its head's weights do not change the time). Four ways, in one llama.cpp process, interleaved round
by round (a shared machine drifts; each way is timed once per round, in rotating order):

* ``plain``: no guard;
* ``guarded``: the guard of ``so8t run`` (so8t/llama/runner.py): the same context and prefill, the prompt's last
  token decoded on its own with hidden-state output on, the head applied, then the first token; the timed
  operation of the benchmark;
* ``two_context``: the old path's cost, a second prefill of the prompt with every position's hidden state as
  output (``LlamaRuntime.safety``) before the generation; until 2026-12-04 that prefill ran in a second
  context in embedding mode, which computes the same and mapped the weights twice;
* ``separate_guard``: a separate guard model's prefill before the served model's (Llama Guard style), with a
  second copy of the same file standing in for a guard model of equal size.

Recorded (``extra_info``): the median seconds of each way and ``ttft_ratio`` = guarded / plain (target
<= 1.05), ``two_context_ratio`` and ``separate_guard_ratio``. Judged by the nightly check, not asserted.
"""

from __future__ import annotations

import time

import numpy as np

N_PROMPT = 128
ROUNDS = 7


def test_guard_ttft(benchmark, bench, bench_model, tools, scratch):
    from so8t.conversion import Qwen2VLToSO8TConverter
    from so8t.gguf.export import SO8TToGGUFConverter
    from so8t.llama.runtime import LlamaRuntime

    so8t_dir = Qwen2VLToSO8TConverter(bench.source, progress=False, safety_features=True).convert(scratch / "so8t")
    (scratch / "gguf").mkdir()
    text = SO8TToGGUFConverter(so8t_dir, progress=False).export(
        scratch / "gguf", quant_types=["Q8_0"], model_name="guard", mmproj=False, n_threads=bench.threads).texts[0]
    ids = np.random.default_rng(5).integers(0, 151643, N_PROMPT).tolist()
    n_ctx = N_PROMPT + 16
    with LlamaRuntime(text.path, sidecar=text.sidecar, n_ctx=n_ctx, n_threads=bench.threads) as rt, \
            LlamaRuntime(text.path, n_ctx=n_ctx, n_threads=bench.threads) as guard_model:
        head = rt.safety_head()
        verdicts = []

        def guard(hidden) -> bool:
            verdicts.append(head.verdict(hidden.astype(np.float64)).label)
            return True  # always answer: the time to the first token is what is compared

        ways = {
            "plain": lambda: rt.generate(ids, max_tokens=1, stop_at_eos=False),
            "guarded": lambda: rt.generate(ids, max_tokens=1, stop_at_eos=False, guard=guard),
            "two_context": lambda: (rt.safety(ids), rt.generate(ids, max_tokens=1, stop_at_eos=False)),
            "separate_guard": lambda: (guard_model.generate(ids, max_tokens=1, stop_at_eos=False),
                                       rt.generate(ids, max_tokens=1, stop_at_eos=False)),
        }
        for way in ways.values():  # untimed warm-up: pages in the weights
            way()
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        order = list(ways)

        def round_of_all():
            for name in order:
                start = time.perf_counter()
                ways[name]()
                seconds[name].append(time.perf_counter() - start)
            order.append(order.pop(0))  # rotate, so no way always runs first

        for _ in range(ROUNDS):
            round_of_all()
        benchmark.pedantic(ways["guarded"], rounds=ROUNDS, iterations=1, warmup_rounds=0)
    assert verdicts and set(verdicts) <= {"ALLOW", "ESCALATE", "REFUSE"}
    med = {name: tools.median(values) for name, values in seconds.items()}
    benchmark.extra_info.update({
        "model": bench.model, "quant": "Q8_0", "n_prompt": N_PROMPT, "threads": bench.threads,
        **{f"{name}_s": round(value, 4) for name, value in med.items()},
        "ttft_ratio": round(med["guarded"] / med["plain"], 3),
        "two_context_ratio": round(med["two_context"] / med["plain"], 3),
        "separate_guard_ratio": round(med["separate_guard"] / med["plain"], 3),
    })
