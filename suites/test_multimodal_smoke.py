"""Text GGUF + mmproj through llama.cpp's multimodal path (llama-cpp-python 0.3.36, ``libmtmd``).

1. Smoke: ``Qwen25VLChatHandler`` loads the mmproj next to the exported text file and answers a chat
   prompt that carries a small generated image.
2. Parity: on an image neither preprocessor resizes (``parity_image``), llama.cpp's image embeddings
   equal transformers' Qwen2-VL vision tower (patch embed, blocks, merger) run on the same weights.

Note [vision tolerance]: llama.cpp's CPU vision path is not float32 end to end. It rounds the patch
input (im2col) and every GELU input and output (lookup tables) to F16, unit roundoff ``u = 2^-11``; an
F16 mmproj also rounds each weight matrix once. Counting one relative error ``u`` per rounding stage
that feeds the output (input, one activation per block, the merger activation; plus patch, q/k/v, out,
fc1, fc2 per block and the two merger matrices for F16 weights), the bound is
``stages * u * max|reference|``. A mapping error (q/k/v order, a wrong norm, patch order) gives errors
of the order of the output itself, far above it.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

pytestmark = pytest.mark.llama

F16_UNIT_ROUNDOFF = 2.0**-11
#: The text file the mmproj is loaded next to. The image path does not depend on it; Q8_0 holds half what
#: F16 does at a real size (the embedding parity loads it vocabulary-only in any case).
TEXT_TYPE = "Q8_0"


def _png_data_url(pixels: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_chat_with_an_image_through_the_multimodal_handler(gguf_text, mmproj_f16, parity_image):
    from llama_cpp.llama_chat_format import Qwen25VLChatHandler

    from so8t.llama import api as llama_api

    text_file, mmproj = gguf_text[TEXT_TYPE].path, mmproj_f16
    handler = Qwen25VLChatHandler(clip_model_path=str(mmproj), verbose=False)
    llm = llama_api.load(text_file, chat_handler=handler, n_ctx=512, n_threads=2)  # the one way so8t loads
    try:
        question = {"type": "text", "text": "What is in this picture?"}
        image = {"type": "image_url", "image_url": {"url": _png_data_url(parity_image[0])}}
        with_image = llm.create_chat_completion(
            messages=[{"role": "user", "content": [image, question]}], max_tokens=4, temperature=0.0
        )
        text_only = llm.create_chat_completion(
            messages=[{"role": "user", "content": [question]}], max_tokens=4, temperature=0.0
        )
    finally:
        llm.close()
    choice = with_image["choices"][0]
    assert with_image["usage"]["completion_tokens"] >= 1
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("length", "stop")
    # the image occupied prompt positions: the handler really inserted it
    assert with_image["usage"]["prompt_tokens"] > text_only["usage"]["prompt_tokens"]


def _rounding_stages(depth: int, dtype: str) -> int:
    """Note [vision tolerance]: F16 rounding stages between the pixels and the image embeddings."""
    stages = 1 + depth + 1  # patch input, one activation per block, the merger activation
    if dtype == "f16":
        stages += 1 + 4 * depth + 2  # patch kernel, qkv/out/fc1/fc2 per block, mm.0 and mm.2
    return stages


@pytest.mark.parametrize("dtype", ["f16", "f32"])
def test_image_embeddings_match_the_pytorch_vision_tower(
    gguf_text, mmproj_gguf, vision_tower_embeddings, parity_image, source_reader, dtype
):
    pixels, _, grid_thw = parity_image
    want = vision_tower_embeddings
    from so8t.llama import api as llama_api

    got = llama_api.image_embeddings(gguf_text[TEXT_TYPE].path, mmproj_gguf[dtype], pixels)
    merge = source_reader.vision_config["spatial_merge_size"]
    assert (
        got.shape
        == want.shape
        == (int(grid_thw.prod()) // merge**2, source_reader.text_config["hidden_size"])
    )
    bound = (
        _rounding_stages(source_reader.vision_config["depth"], dtype) * F16_UNIT_ROUNDOFF * np.abs(want).max()
    )
    error = np.abs(got - want).max()
    assert error <= bound, f"max |llama.cpp - transformers| = {error:.3g} > {bound:.3g}"


def test_image_embeddings_refuse_a_file_that_is_not_an_mmproj(gguf_text, parity_image):
    """The text file given as the mmproj: a one-line error naming it, before llama.cpp is asked to load it."""
    from so8t.errors import RuntimeLoadError
    from so8t.llama import api as llama_api

    text_file = gguf_text[TEXT_TYPE].path
    with pytest.raises(RuntimeLoadError) as info:
        llama_api.image_embeddings(text_file, text_file, parity_image[0])
    assert str(text_file) in str(info.value) and "not an mmproj" in str(info.value) and "\n" not in str(info.value)
