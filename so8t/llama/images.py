"""llama.cpp's image encoder through libmtmd's raw bindings (with ``so8t.llama.api``, the one
home of llama-cpp-python's private and low-level API)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from so8t.errors import RuntimeLoadError
from so8t.llama.api import api, load


def image_embeddings(text_file: str | Path, mmproj: str | Path, pixels: np.ndarray) -> np.ndarray:
    """llama.cpp's embeddings ``[n_tokens, n_embd]`` of one RGB image ``[height, width, 3]`` uint8, through
    libmtmd (flash attention off, no warm-up, 2 threads)."""
    llama_cpp = api()
    mtmd = llama_cpp.mtmd_cpp
    llm = load(text_file, n_ctx=256, n_threads=2)
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
            n_tokens, n_embd = mtmd.mtmd_input_chunk_get_n_tokens(chunk), llm.n_embd()
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
