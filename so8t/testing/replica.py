"""Full-size random replica of Qwen2-VL-2B-Instruct, for benchmarks only (about 4.4 GB of bf16).

Same builder as the tiny default model with the real shapes (``TinySpec.qwen2vl_2b_instruct()``):
2,208,985,600 parameters, two bf16 shards, ``total_size`` 4,417,971,200 bytes, tied embeddings, the real
tokenizer. Tensors are generated and written one at a time, so peak memory is about one embedding
matrix in float32 (0.9 GB), not the model. Never build it in the default test gate.
"""

from __future__ import annotations

import sys
from pathlib import Path

from so8t.io import atomic_path
from so8t.testing.builder import write_checkpoint_files
from so8t.testing.spec import TinySpec, tensor_table


def build_full_replica(out_dir: str | Path, spec: TinySpec | None = None, progress: bool = True) -> Path:
    """Write the replica to ``out_dir`` atomically (tqdm progress bar on stderr); returns the path."""
    from tqdm import tqdm

    spec = spec or TinySpec.qwen2vl_2b_instruct()
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        bar = tqdm(
            total=len(tensor_table(spec)),
            desc="replica",
            unit="tensor",
            file=sys.stderr,
            disable=not progress,
        )
        with bar:
            write_checkpoint_files(tmp, spec, on_tensor=lambda _name: bar.update(1))
    return out_dir
