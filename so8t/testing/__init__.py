"""Generated Qwen2-VL checkpoints for tests and benchmarks (no hub downloads).

Public API:
    default_checkpoint(variant="tied"|"untied") -> Path   embedded default model, built once per machine
    TinySpec                                               every choice a test variant can make
    build_checkpoint(out_dir, spec) -> Path                build a variant (layout, shards, dtype, tied)
    build_full_replica(out_dir) -> Path                    real Qwen2-VL-2B-Instruct shapes, benchmarks only
"""

from so8t.testing.builder import build_checkpoint
from so8t.testing.default import BUILDER_VERSION, default_checkpoint
from so8t.testing.replica import build_full_replica
from so8t.testing.spec import TinySpec

__all__ = ["BUILDER_VERSION", "TinySpec", "build_checkpoint", "build_full_replica", "default_checkpoint"]
