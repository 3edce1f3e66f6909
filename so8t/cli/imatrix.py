"""``so8t imatrix``: an importance matrix of the SO8T model over a calibration text, in llama.cpp's format."""

from __future__ import annotations

from so8t.cli.common import add_command


def register(sub) -> None:
    p = add_command(
        sub,
        "imatrix",
        "collect an importance matrix (llama.cpp's imatrix GGUF) from the SO8T model over a calibration text",
        description=(
            "Run the SO8T model (gates applied; float64 reference, one decoder layer in memory at a time) over a "
            "calibration text and write, for every weight a quantizer encodes, the sum of squared input "
            "activations per column and the token count, in llama.cpp's imatrix GGUF format (llama-quantize "
            "--imatrix reads it; so8t export --imatrix reads it and llama-imatrix's). Give it to 'so8t export "
            "--imatrix FILE'; IQ3_XXS and IQ2_M need one, the other block types get lower error from it."
        ),
    )
    p.add_argument("--input-model", required=True, help="SO8T checkpoint directory")
    p.add_argument("--output", required=True, help="imatrix GGUF to write (e.g. model.imatrix.gguf)")
    p.add_argument("--calibration", default=None, metavar="TEXT",
                   help="UTF-8 calibration text file (default: so8t's own, about 1.5k tokens of English, "
                   "Japanese and code)")
    p.add_argument("--chunk-size", type=int, default=512,
                   help="tokens per chunk; each chunk is its own sequence from position 0 (llama-imatrix -c)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from so8t.checkpoint.so8t_dir import SO8TCheckpoint
    from so8t.imatrix.collect import collect_imatrix, read_calibration
    from so8t.imatrix.file import write_imatrix
    from so8t.io import atomic_path

    SO8TCheckpoint(args.input_model)  # not an SO8T checkpoint: one line, before the tokenizer loads
    text, name = read_calibration(args.calibration)
    imatrix, seconds = collect_imatrix(args.input_model, text, name, args.chunk_size, progress=not args.quiet)
    with atomic_path(args.output) as tmp:
        write_imatrix(imatrix, tmp)
    tokens = int(next(iter(imatrix.counts.values())))
    print(f"{args.output}: {len(imatrix.sums)} weights, {tokens} tokens in {imatrix.chunk_count} chunks of "
          f"<= {imatrix.chunk_size} from {name}, {seconds:.1f} s")
    return 0
