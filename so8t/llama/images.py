"""llama.cpp's image encoder through libmtmd's raw bindings (with ``so8t.llama.api``, the one
home of llama-cpp-python's private and low-level API)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from so8t.errors import RuntimeLoadError
from so8t.llama.api import api, load


def _projection_dim(mmproj: str | Path) -> int:
    from gguf import Keys

    from so8t.gguf.reader import open_gguf

    field = open_gguf(mmproj).get_field(Keys.ClipVision.PROJECTION_DIM)
    if field is None:
        raise RuntimeLoadError(f"no {Keys.ClipVision.PROJECTION_DIM} key: not an mmproj", path=mmproj)
    return int(field.contents())


def image_embeddings(text_file: str | Path, mmproj: str | Path, pixels: np.ndarray) -> np.ndarray:
    """llama.cpp's embeddings ``[n_tokens, n_embd]`` of one RGB image ``[height, width, 3]`` uint8, through
    libmtmd (flash attention off, no warm-up, 2 threads).

    libmtmd takes the text model for its vocabulary (the image marker) and its rope type; encoding an image
    runs the mmproj alone. So the text file is loaded vocabulary-only: its weights are never mapped (3.1 GB of
    an F16 file at Qwen2-VL-2B size), and ``n_embd`` is the mmproj's ``projection_dim``, which the exporter
    writes equal to the text model's hidden size (``so8t.gguf.vision``)."""
    llama_cpp = api()
    mtmd = llama_cpp.mtmd_cpp
    n_embd = _projection_dim(mmproj)
    llm = load(text_file, vocab_only=True)
    params = mtmd.mtmd_context_params_default()
    params.use_gpu, params.n_threads, params.print_timings, params.warmup = False, 2, False, False
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    ctx = mtmd.mtmd_init_from_file(str(mmproj).encode(), llm.model, params)
    if not ctx:
        llm.close()
        raise RuntimeLoadError("llama.cpp could not load the mmproj next to the text model", path=mmproj)
    height, width, _ = pixels.shape
    data = (ctypes.c_uint8 * pixels.size).from_buffer_copy(np.ascontiguousarray(pixels).tobytes())
    bitmap, chunks = mtmd.mtmd_bitmap_init(width, height, data), mtmd.mtmd_input_chunks_init()
    try:
        prompt = b"<" + mtmd.mtmd_default_marker() + b">"
        text = mtmd.mtmd_input_text(text=prompt, text_len=len(prompt), add_special=False, parse_special=True)
        if mtmd.mtmd_tokenize(ctx, chunks, ctypes.byref(text), (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap), 1):
            raise RuntimeLoadError("libmtmd could not tokenize the image prompt", path=mmproj)
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) != mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                continue
            n_tokens = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            if mtmd.mtmd_encode_chunk(ctx, chunk):
                raise RuntimeLoadError("libmtmd could not encode the image", path=mmproj)
            out = mtmd.mtmd_get_output_embd(ctx)
            return np.ctypeslib.as_array(out, shape=(n_tokens * n_embd,)).reshape(n_tokens, n_embd).copy()
        raise RuntimeLoadError("libmtmd produced no image chunk", path=mmproj)
    finally:
        mtmd.mtmd_input_chunks_free(chunks)
        mtmd.mtmd_bitmap_free(bitmap)
        mtmd.mtmd_free(ctx)
        llm.close()
