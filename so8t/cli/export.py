"""``so8t export``: an SO8T checkpoint -> GGUF files that stock llama.cpp runs (text, mmproj, sidecar)."""

from __future__ import annotations

from so8t.cli.common import add_command


def register(sub) -> None:
    p = add_command(
        sub,
        "export",
        "export an SO8T checkpoint to GGUF (text + mmproj + SO8T sidecar) for llama.cpp",
        description=(
            "Fold the SO(8) gates into the weights and write a llama.cpp 'qwen2vl' text GGUF per quantization "
            "type, the vision tower as an mmproj GGUF, the gates + safety head as a sidecar GGUF, and the "
            "bundle: an Ollama Modelfile, a README.md model card and SHA256SUMS. "
            "Types: F32 F16 BF16 Q8_0 Q4_0 Q6_K Q5_K_M Q5_K_S Q4_K_M Q4_K_S Q3_K_L Q3_K_M Q3_K_S Q2_K IQ4_XS "
            "IQ4_NL IQ3_M, and with an importance matrix IQ3_XXS IQ2_M (Q8_K is not a file type). "
            "An importance matrix (--imatrix, or --calibration to collect one first) weights every block type "
            "toward the columns the model uses most; it is copied beside the files as <model-name>.imatrix.gguf."
        ),
    )
    p.add_argument("--input-model", required=True, help="SO8T checkpoint directory (or a plain Qwen2-VL one)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--output-gguf", help="text GGUF path (several types: <stem>-<TYPE>.gguf next to it)")
    where.add_argument("--output-dir", help="directory for <model-name>-<TYPE>.gguf, the mmproj and sidecars")
    p.add_argument(
        "--quantization",
        action="append",
        default=None,
        metavar="TYPE[,TYPE...]",
        help="quantization type(s), repeatable or comma separated (default F16)",
    )
    imx = p.add_mutually_exclusive_group()
    imx.add_argument("--imatrix", default=None, metavar="FILE",
                     help="importance-matrix GGUF (from 'so8t imatrix', or llama-imatrix's) for the block types")
    imx.add_argument("--calibration", default=None, metavar="TEXT",
                     help="collect the importance matrix from this UTF-8 text first (so8t imatrix's default "
                     "text: so8t/data/calibration.txt)")
    p.add_argument("--model-name", default=None, help="general.name and file stem (default: input dir name)")
    p.add_argument("--mmproj", dest="mmproj", action="store_true", default=True, help="write the mmproj file")
    p.add_argument("--no-mmproj", dest="mmproj", action="store_false", help="skip the vision tower")
    p.add_argument("--mmproj-dtype", choices=["f16", "f32"], default="f16", help="mmproj matrix type")
    p.add_argument("--no-sidecar", dest="sidecar", action="store_false", help="skip the SO8T sidecar file")
    p.add_argument("--split-max-size", metavar="SIZE", default=None,
                   help="write text GGUFs larger than SIZE as gguf-split parts <stem>-00001-of-0000N.gguf "
                   "(bytes, or a whole number with M = 10^6 or G = 10^9 bytes: 2G, 500M)")
    p.add_argument("--no-bundle", dest="bundle", action="store_false",
                   help="skip the Modelfile, README.md model card and SHA256SUMS")
    p.add_argument("--threads", type=int, default=0, help="threads for llama.cpp's quantizer (0: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also print where the time went: CPU and wall seconds of read, fold, cast, quantize, write, hash",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    import so8t
    from so8t.gguf.quant import parse_quant_types, require_imatrix
    from so8t.gguf.split import parse_split_size

    types = parse_quant_types(args.quantization or ["F16"])  # fail fast on Q8_K / unknown names
    require_imatrix(types, bool(args.imatrix or args.calibration))
    split = parse_split_size(args.split_max_size) if args.split_max_size is not None else 0  # and on bad sizes
    out = Path(args.output_gguf) if args.output_gguf else Path(args.output_dir)
    if args.output_dir:
        out.mkdir(parents=True, exist_ok=True)
    report = so8t.export_gguf(
        args.input_model,
        out,
        quant_types=[t.name for t in types],
        model_name=args.model_name,
        mmproj=args.mmproj,
        mmproj_dtype=args.mmproj_dtype,
        sidecar=args.sidecar,
        n_threads=args.threads,
        progress=not args.quiet,
        split_max_size=split,
        bundle=args.bundle,
        imatrix=args.imatrix,
        calibration=args.calibration,
    )
    print(report.summary())
    if args.profile:
        print(report.phases.summary())
    return 0
