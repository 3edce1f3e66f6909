"""Runtime checks: a real llama.cpp load and short inference, and logit parity against PyTorch.

Isolation: llama.cpp is C code; a file it misreads could crash the whole process. So (1) these checks
run only after every file, metadata and tensor check passed, and (2) the load runs in a child process
(``python -m so8t.validate.checks_runtime text MODEL OUT_DIR``, through ``so8t.runtime.LlamaRuntime``
with an F32 KV cache; ``image MODEL MMPROJ OUT_DIR`` for the multimodal path): a crash, a hang (timeout) or a refusal becomes a FAIL with llama.cpp's last words.

The probe tokenizes a ChatML prompt with llama.cpp's tokenizer, takes the logits at every position,
and greedily generates a few tokens (tokens/s from llama.cpp's perf counters). With an mmproj, a second
child asks about a small generated image through llama.cpp's multimodal handler.

Parity (``--so8t-model``): the same token ids through ``so8t.model.SO8TModel`` (float32), all positions.
Note [eps]: the llama.cpp in llama-cpp-python 0.3.36 ignores ``qwen2vl.attention.layer_norm_rms_epsilon``
and runs RMSNorm with eps = 0 (REFERENCE section 5). The reference is therefore computed twice, with
eps = 0 and with the checkpoint's eps; the check reports which one llama.cpp matches and compares
against the closer one, so the bug is named in the report and the check keeps working the day
llama.cpp reads the key again. Bounds (shared with suites/test_llama_parity.py, derived in
``so8t.gguf.parity``): ``float_bound`` for float types (argmax must agree wherever the reference's top-1
margin exceeds twice it), ``QUANT_THRESHOLDS`` (top-1 agreement, mean KL) for block types.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from so8t.gguf.parity import (
    FLOAT_UNIT_ROUNDOFF,
    QUANT_THRESHOLDS,
    compare_logits,
    decided,
    float_bound,
    parity_name,
)
from so8t.validate.context import CheckFailed, Context, check, expect, passed, skipped

PROBE_PROMPT = "What does a rotation in SO(8) preserve?"
PROBE_NEW_TOKENS = 4
PROBE_TIMEOUT_S = 300


def _run_probe(args: list[str], out_dir: str, what: str) -> dict:
    """Run the probe child process; raise CheckFailed on a crash, hang, or refusal; return probe.json."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "so8t.validate.checks_runtime", *args, out_dir],
            check=False, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"llama.cpp did not finish {what} within {PROBE_TIMEOUT_S} s",
                          measured=PROBE_TIMEOUT_S, bound=PROBE_TIMEOUT_S) from None
    tail = " | ".join((proc.stderr or "").strip().splitlines()[-3:])
    if proc.returncode < 0:
        raise CheckFailed(f"llama.cpp crashed during {what} (signal {-proc.returncode}): {tail}",
                          measured=proc.returncode, bound=0)
    expect(proc.returncode == 0, f"llama.cpp could not do {what} (exit {proc.returncode}): {tail}",
           measured=proc.returncode, bound=0)
    return json.loads(Path(out_dir, "probe.json").read_text())


def _llama_missing() -> str | None:
    try:
        import llama_cpp  # noqa: F401
    except ImportError as err:
        return f"llama-cpp-python is not installed ({err})"
    return None


@check("runtime.llama_load", "runtime",
       requires=("category:file", "category:metadata", "category:tensors", "tensors.finite"))
def llama_load(ctx: Context):
    if not ctx.run_runtime:
        return skipped("runtime stage disabled (run_runtime=False)")
    if missing := _llama_missing():
        return skipped(missing)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="so8t-probe-") as tmp:
        info = _run_probe(["text", str(ctx.gguf_path)], tmp, "a load and a short inference")
        arrays = np.load(Path(tmp, "probe.npz"))
        ctx.cache["probe"] = {**info, "ids": arrays["ids"].tolist(), "logits": arrays["logits"]}
    logits = ctx.cache["probe"]["logits"]
    n_bad = int(logits.size - np.count_nonzero(np.isfinite(logits)))
    expect(n_bad == 0, f"llama.cpp produced {n_bad} NaN/Inf logits", measured=n_bad, bound=0)
    hp_vocab = len(ctx.value("tokenizer.ggml.tokens") or [])
    expect(logits.shape[1] == hp_vocab, f"llama.cpp reports {logits.shape[1]} logits per position, the file "
           f"has {hp_vocab} tokens")
    return passed(f"loaded in llama.cpp; {len(info['prompt_ids'])} prompt tokens, generated "
                  f"{info['generated']!r}; prompt {info['prompt_tps']:.0f} tok/s, generation "
                  f"{info['gen_tps']:.0f} tok/s ({time.perf_counter() - start:.1f} s)",
                  measured=round(info["gen_tps"], 2))


@check("runtime.mmproj_image", "runtime", requires=("runtime.llama_load", "tensors.mmproj"))
def mmproj_image(ctx: Context):
    """The text file with the mmproj through llama.cpp's multimodal handler, on a small generated image."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="so8t-probe-") as tmp:
        info = _run_probe(["image", str(ctx.gguf_path), str(ctx.mmproj_path)], tmp, "an image prompt with the mmproj")
    return passed(f"answered an image prompt with the mmproj: {info['answer']!r} "
                  f"({time.perf_counter() - start:.1f} s)", measured=info["answer"])


def _reference_logits(so8t_model: Path, ids: list[int], eps: float | None) -> np.ndarray:
    import torch

    from so8t.model import SO8TModel

    model = SO8TModel.from_dir(so8t_model, dtype=torch.float32, rms_norm_eps=eps)
    with torch.no_grad():
        out = model(torch.tensor([ids], dtype=torch.long))
    return out.logits[0].double().numpy()


@check("parity.logits", "parity", requires=("runtime.llama_load",))
def logits_parity(ctx: Context):
    if ctx.so8t_model is None:
        return skipped("no --so8t-model given")
    from gguf import LlamaFileType

    probe = ctx.cache["probe"]
    file_type = LlamaFileType(ctx.value("general.file_type"))
    ftype, quant = file_type.name, parity_name(file_type)
    if quant not in FLOAT_UNIT_ROUNDOFF and quant not in QUANT_THRESHOLDS:
        return skipped(f"no parity bound for file type {ftype}")
    eps_file = float(ctx.value("qwen2vl.attention.layer_norm_rms_epsilon"))
    refs = {"eps=0, llama.cpp 0.3.36 ignores the file's rms eps": _reference_logits(ctx.so8t_model, probe["ids"], 0.0),
            f"eps={eps_file:g}": _reference_logits(ctx.so8t_model, probe["ids"], None)}
    stats = {label: compare_logits(probe["logits"], ref) for label, ref in refs.items()}
    label = min(stats, key=lambda k: (stats[k]["mean_kl"], stats[k]["max_abs"]))
    st, ref = stats[label], refs[label]
    summary = (f"{ftype} vs PyTorch ({label}), {len(probe['ids'])} positions: max|dlogit| {st['max_abs']:.2e}, "
               f"top-1 {st['top1']:.3f}, mean KL {st['mean_kl']:.2e}")
    if quant in FLOAT_UNIT_ROUNDOFF:
        bound = float_bound(quant, ref, int(ctx.value("qwen2vl.block_count")),
                            max(int(ctx.value("qwen2vl.embedding_length")), int(ctx.value("qwen2vl.feed_forward_length"))))
        expect(st["max_abs"] <= bound, f"{summary}: max|dlogit| above the rounding bound {bound:.2e}",
               measured=st["max_abs"], bound=bound)
        sure = decided(ref, bound)
        agree = probe["logits"].argmax(-1)[sure] == ref.argmax(-1)[sure]
        expect(bool(agree.all()), f"{summary}: argmax differs at {int((~agree).sum())} positions whose top-1 "
               f"margin exceeds twice the bound", measured=int((~agree).sum()), bound=0)
        return passed(summary + f" (bound {bound:.2e}; argmax equal at all {int(sure.sum())} decided positions)",
                      measured=st["max_abs"], bound=bound)
    min_top1, max_kl = QUANT_THRESHOLDS[quant]
    expect(st["top1"] >= min_top1, f"{summary}: top-1 agreement below {min_top1}", measured=st["top1"], bound=min_top1)
    expect(st["mean_kl"] <= max_kl, f"{summary}: mean KL above {max_kl}", measured=st["mean_kl"], bound=max_kl)
    return passed(summary + f" (thresholds top-1 >= {min_top1}, mean KL <= {max_kl})",
                  measured=st["mean_kl"], bound=max_kl)


def _probe(mode: str, model: str, *rest: str) -> int:
    """Child process. ``text MODEL OUT``: logits at every prompt position and a short greedy generation
    (probe.json, probe.npz). ``image MODEL MMPROJ OUT``: a short answer about a generated image."""
    from so8t.runtime import LlamaRuntime, chat_prompt

    out_dir = rest[-1]
    if mode == "image":
        from PIL import Image

        pixels = np.random.default_rng(0).integers(0, 256, (56, 56, 3), dtype=np.uint8)
        image = Path(out_dir, "probe.png")
        Image.fromarray(pixels).save(image)
        with LlamaRuntime(model, mmproj=rest[0], n_ctx=512, n_threads=2) as rt:
            answer = rt.describe_image(image, "What is in the image?", max_tokens=PROBE_NEW_TOKENS)
        Path(out_dir, "probe.json").write_text(json.dumps({"answer": answer}))
        return 0
    with LlamaRuntime(model, n_ctx=256, n_threads=2, f32_kv=True) as rt:
        ids = rt.tokenize(chat_prompt(PROBE_PROMPT))
        logits = rt.logits(ids)
        gen = rt.generate(ids, max_tokens=PROBE_NEW_TOKENS, stop_at_eos=False)
    np.savez(Path(out_dir, "probe.npz"), ids=np.asarray(ids, dtype=np.int64), logits=logits.astype(np.float32))
    Path(out_dir, "probe.json").write_text(json.dumps({
        "prompt_ids": ids, "generated": gen.text, "generated_ids": gen.tokens,
        "prompt_tps": gen.prompt_tokens_per_s, "gen_tps": gen.gen_tokens_per_s,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(_probe(*sys.argv[1:]))
