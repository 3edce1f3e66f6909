"""What the importance matrix buys: per quantization type, KL against the float64 SO8T reference with and
without the imatrix, on text the imatrix never saw, and the file size.

The imatrix is collected from the SO8T model (``so8t.imatrix.collect``) on the shipped calibration text
(so8t/data/calibration.txt); KL is measured on so8t/data/heldout.txt, a different text. Every file is
scored by llama.cpp on the same token ids (``run_text_probe``) against the reference with RMSNorm eps 0
(the llama.cpp of llama-cpp-python 0.3.36 runs eps 0; docs/reference.md section 5), with
``so8t.gguf.parity.compare_logits`` (``llama-perplexity --kl-divergence`` terms).

Run (prints the markdown table of docs/benchmarks.md; heavy: take the shared lock)::

    python -m benchmarks.imatrix_quality --so8t-model CHECKPOINT --out DIR [--types Q4_K_M,...]

``CHECKPOINT`` is a Qwen2-VL checkpoint, converted here with seeded random gates (the conftest's seed).
``benchmarks/test_bench_imatrix.py`` records the same figures in ``extra_info`` for the nightly job.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_K_S", "Q4_0", "IQ4_XS", "IQ4_NL", "Q3_K_L", "Q3_K_M",
         "Q3_K_S", "IQ3_M", "IQ3_XXS", "Q2_K", "IQ2_M")


def heldout_ids(so8t_dir: Path) -> list[int]:
    import importlib.resources

    from so8t.training.data import load_tokenizer

    text = importlib.resources.files("so8t.data").joinpath("heldout.txt").read_text(encoding="utf-8")
    return load_tokenizer(so8t_dir).encode(text, add_special_tokens=False)


def measure(so8t_dir: Path, workdir: Path, types=TYPES, threads: int = 0, progress: bool = False) -> dict:
    """``{"collect_seconds", "tokens", "rows": [{type, with/without: {mean_kl, mean_kl_se, top1, size}}]}``."""
    from so8t.gguf.export import SO8TToGGUFConverter
    from so8t.gguf.parity import compare_logits
    from so8t.gguf.quant import QUANT_TYPES
    from so8t.imatrix.collect import collect_imatrix, read_calibration
    from so8t.imatrix.file import write_imatrix
    from so8t.reference import StreamedReference, Variant
    from so8t.validation.checks_runtime import run_text_probe

    text, name = read_calibration(None)
    imatrix, collect_seconds = collect_imatrix(so8t_dir, text, name, progress=progress)
    write_imatrix(imatrix, workdir / "calibration.imatrix.gguf")
    ids = heldout_ids(so8t_dir)
    ref = StreamedReference(so8t_dir).run([ids], [Variant(eps=0.0)])[Variant(eps=0.0)].logits
    rows = {t: {"type": t} for t in types}
    for label, source in (("with", workdir / "calibration.imatrix.gguf"), ("without", None)):
        chosen = [t for t in types if source is not None or not QUANT_TYPES[t].needs_imatrix]
        out = workdir / label
        out.mkdir(exist_ok=True)
        report = SO8TToGGUFConverter(so8t_dir, progress=progress).export(
            out, quant_types=chosen, model_name="m", mmproj=False, sidecar=False, n_threads=threads, imatrix=source)
        for t in report.texts:
            with tempfile.TemporaryDirectory(dir=workdir) as tmp:
                probe = run_text_probe(t.path, tmp, ids=[ids])
            stats = compare_logits(probe["logits"], ref)
            rows[t.quant][label] = {"mean_kl": stats["mean_kl"], "mean_kl_se": stats["mean_kl_se"],
                                    "top1": stats["top1"], "size": t.size}
            t.path.unlink()
    return {"collect_seconds": collect_seconds, "tokens": len(ids), "rows": list(rows.values())}


def table(result: dict) -> str:
    lines = ["| type | size (MiB) | mean KL without imatrix | mean KL with imatrix | change | top-1 without / with |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for r in result["rows"]:
        w, wo = r["with"], r.get("without")
        kl_wo = f"{wo['mean_kl']:.4g} ± {wo['mean_kl_se']:.2g}" if wo else "refused (needs an imatrix)"
        change = f"{100 * (w['mean_kl'] / wo['mean_kl'] - 1):+.1f}%" if wo else ""
        top1 = f"{wo['top1']:.3f} / {w['top1']:.3f}" if wo else f"- / {w['top1']:.3f}"
        lines.append(f"| {r['type']} | {w['size'] / 2**20:.1f} | {kl_wo} | {w['mean_kl']:.4g} ± {w['mean_kl_se']:.2g} "
                     f"| {change} | {top1} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--so8t-model", required=True, help="Qwen2-VL checkpoint (converted here)")
    parser.add_argument("--gates", choices=("random", "identity"), default="random",
                        help="gates of the conversion: seeded random (default) or identity (the plain model)")
    parser.add_argument("--out", required=True, help="work directory")
    parser.add_argument("--types", default=",".join(TYPES))
    args = parser.parse_args()
    from benchmarks.conftest import GATE_SEED
    from so8t.conversion import Qwen2VLToSO8TConverter

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    so8t_dir = out / f"so8t-{args.gates}"
    if not so8t_dir.is_dir():
        Qwen2VLToSO8TConverter(args.so8t_model, progress=False, rotation_init=args.gates, seed=GATE_SEED).convert(
            so8t_dir
        )
    result = measure(so8t_dir, out, args.types.split(","), progress=True)
    print(table(result))
    print(f"\nimatrix collection {result['collect_seconds']:.1f} s; {result['tokens']} held-out tokens; "
          f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
