"""Runtime checks: a real llama.cpp load and short inference, and the probe that parity scores.

Isolation: llama.cpp is C code; a file it misreads could crash the whole process. So (1) these checks
run only after every file, metadata and tensor check passed, and (2) the load runs in a child process
(``python -m so8t.validation.checks_runtime text MODEL OUT_DIR [IDS.npz]``, through
``so8t.llama.runtime.LlamaRuntime`` with an F32 KV cache; ``image MODEL MMPROJ OUT_DIR`` for the multimodal
path): a crash, a hang (timeout) or a refusal becomes a FAIL with llama.cpp's last words.

The text probe tokenizes each of the chat-formatted probe prompts (so8t/validation/probes.py) with
llama.cpp's tokenizer (or takes the token ids given in ``IDS.npz``, so a second file is scored on exactly
the same tokens), takes the logits at every position of each prompt (one sequence per prompt, the KV cache
cleared in between), and greedily generates a few tokens after the first (tokens/s from llama.cpp's perf
counters). With an mmproj, a second child asks about a small generated image through llama.cpp's
multimodal handler. Parity against PyTorch is so8t/validation/checks_parity.py.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from so8t.validation.context import CheckFailed, Context, check, expect, passed, skipped

PROBE_NEW_TOKENS = 4
PROBE_TIMEOUT_S = 300


def _run_probe(args: list[str], out_dir: str, what: str) -> dict:
    """Run the probe child process; raise CheckFailed on a crash, hang, or refusal; return probe.json."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "so8t.validation.checks_runtime", *args, out_dir],
            check=False, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"llama.cpp did not finish {what} within {PROBE_TIMEOUT_S} s",
                          measured=PROBE_TIMEOUT_S, bound=PROBE_TIMEOUT_S) from None
    tail = " | ".join((proc.stderr or "").strip().splitlines()[-3:])
    if proc.returncode < 0:
        raise CheckFailed(_crash_line(proc.returncode, what, out_dir), measured=proc.returncode, bound=0)
    expect(proc.returncode == 0, f"llama.cpp could not do {what} (exit {proc.returncode}): {tail}",
           measured=proc.returncode, bound=0)
    return json.loads(Path(out_dir, "probe.json").read_text())


BUILD_FILE = "llama_build.json"


def _crash_line(returncode: int, what: str, out_dir: str) -> str:
    """The one line a crash is reported with: signal, the build's features as the child saw them (it
    writes ``BUILD_FILE`` before it loads anything), and the fix for a known case."""
    from so8t.llama.build import ExtraBuftsDecision, crash_line

    try:
        build = json.loads(Path(out_dir, BUILD_FILE).read_text())
    except (OSError, ValueError):
        return crash_line(returncode, what, "")
    return crash_line(returncode, what, build["system_info"], ExtraBuftsDecision(**build["decision"]))


def _llama_missing() -> str | None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError as err:
        return f"llama-cpp-python is not installed ({err})"
    return None


def run_text_probe(model: Path, out_dir: str, ids: list[list[int]] | None = None) -> dict:
    """The text probe on ``model`` in a child process: ``{"ids": [[...] per prompt], "logits": [T, vocab]
    float32 (prompts concatenated), "offsets", "generated", "prompt_tps", "gen_tps", ...}``. With ``ids``
    the child scores exactly those token sequences instead of tokenizing the probe prompts."""
    args = ["text", str(model)]
    if ids is not None:
        ids_file = Path(out_dir, "ids.npz")
        np.savez(ids_file, ids=np.concatenate([np.asarray(s, dtype=np.int64) for s in ids]),
                 offsets=np.cumsum([0, *map(len, ids)]))
        args.append(str(ids_file))
    info = _run_probe(args, out_dir, "a load and a short inference")
    arrays = np.load(Path(out_dir, "probe.npz"))
    offsets = arrays["offsets"].tolist()
    flat = arrays["ids"].tolist()
    info["ids"] = [flat[a:b] for a, b in itertools.pairwise(offsets)]
    info["offsets"], info["logits"] = offsets, arrays["logits"]
    return info


@check("runtime.llama_load", "runtime",
       requires=("category:file", "category:metadata", "category:tensors", "tensors.finite"))
def llama_load(ctx: Context):
    if not ctx.run_runtime:
        return skipped("runtime stage disabled (run_runtime=False)")
    if missing := _llama_missing():
        return skipped(missing)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="so8t-probe-") as tmp:
        info = ctx.cache["probe"] = run_text_probe(ctx.gguf_path, tmp)
    logits = info["logits"]
    n_bad = int(logits.size - np.count_nonzero(np.isfinite(logits)))
    expect(n_bad == 0, f"llama.cpp produced {n_bad} NaN/Inf logits", measured=n_bad, bound=0)
    hp_vocab = len(ctx.value("tokenizer.ggml.tokens") or [])
    expect(logits.shape[1] == hp_vocab, f"llama.cpp reports {logits.shape[1]} logits per position, the file "
           f"has {hp_vocab} tokens")
    return passed(f"loaded in llama.cpp; {len(info['ids'])} prompts, {logits.shape[0]} positions, generated "
                  f"{info['generated']!r}; prompt {info['prompt_tps']:.0f} tok/s, generation "
                  f"{info['gen_tps']:.0f} tok/s ({time.perf_counter() - start:.1f} s)",
                  measured=round(info["gen_tps"], 2))


@check("runtime.mmproj_image", "runtime", requires=("runtime.llama_load", "tensors.mmproj"))
def mmproj_image(ctx: Context):
    """The text file with the mmproj through llama.cpp's multimodal handler, on a small generated image.

    Within one pipeline run the image prompt is asked once, with the run's smallest text file
    (``ctx.image_text_file``; the least memory): the files are the same model at other types (each loaded
    and run by ``runtime.llama_load``) and the mmproj is the same file, so the later reports name the
    file it was answered with (``ctx.image_checked_with``)."""
    if ctx.image_checked_with is not None:
        other = "" if ctx.image_checked_with == ctx.gguf_path else " (the same model at another type)"
        return passed(f"this run answered an image prompt with this mmproj and {ctx.image_checked_with.name}"
                      f"{other}; not repeated", measured=ctx.image_checked_with.name)
    text_file = ctx.image_text_file or ctx.gguf_path
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="so8t-probe-") as tmp:
        info = _run_probe(["image", str(text_file), str(ctx.mmproj_path)], tmp, "an image prompt with the mmproj")
    paired = "" if text_file == ctx.gguf_path else f" and {text_file.name} (the same model at another type)"
    return passed(f"answered an image prompt with the mmproj{paired}: {info['answer']!r} "
                  f"({time.perf_counter() - start:.1f} s)", measured=info["answer"])


def _probe(mode: str, model: str, *rest: str) -> int:
    """Child process. ``text MODEL OUT``: logits at every prompt position and a short greedy generation
    (probe.json, probe.npz). ``image MODEL MMPROJ OUT``: a short answer about a generated image."""
    import dataclasses

    from so8t.llama.build import current_decision, system_info
    from so8t.llama.chat import chat_prompt
    from so8t.llama.runtime import LlamaRuntime

    out_dir = rest[-1]
    Path(out_dir, BUILD_FILE).write_text(json.dumps(
        {"system_info": system_info(), "decision": dataclasses.asdict(current_decision())}))
    if mode == "image":
        from PIL import Image

        pixels = np.random.default_rng(0).integers(0, 256, (56, 56, 3), dtype=np.uint8)
        image = Path(out_dir, "probe.png")
        Image.fromarray(pixels).save(image)
        with LlamaRuntime(model, mmproj=rest[0], n_ctx=512, n_threads=2) as rt:
            answer = rt.describe_image(image, "What is in the image?", max_tokens=PROBE_NEW_TOKENS)
        Path(out_dir, "probe.json").write_text(json.dumps({"answer": answer}))
        return 0
    from so8t.validation.probes import PROBE_PROMPTS

    with LlamaRuntime(model, n_ctx=512, n_threads=2, f32_kv=True) as rt:
        if len(rest) > 1:  # the token ids to score, from the parent
            given = np.load(rest[0])
            flat, offsets = given["ids"].tolist(), given["offsets"].tolist()
            seqs = [flat[a:b] for a, b in itertools.pairwise(offsets)]
        else:
            seqs = [rt.tokenize(chat_prompt(p)) for p in PROBE_PROMPTS]
        logits = np.concatenate([rt.logits(ids) for ids in seqs]).astype(np.float32)
        gen = rt.generate(seqs[0], max_tokens=PROBE_NEW_TOKENS, stop_at_eos=False)
    np.savez(Path(out_dir, "probe.npz"), ids=np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs]),
             offsets=np.cumsum([0, *map(len, seqs)]), logits=logits)
    Path(out_dir, "probe.json").write_text(json.dumps({
        "generated": gen.text, "generated_ids": gen.tokens,
        "prompt_tps": gen.prompt_tokens_per_s, "gen_tps": gen.gen_tokens_per_s,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(_probe(*sys.argv[1:]))
