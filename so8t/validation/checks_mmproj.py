"""Metadata check of the mmproj (vision) GGUF, against what llama.cpp's multimodal loader needs."""

from __future__ import annotations

from gguf import GGUFValueType

from so8t.validation.checks_metadata import hparams, typed_value
from so8t.validation.context import Context, check, expect, passed

_U32, _F32, _STR, _BOOL, _ARR = (GGUFValueType.UINT32, GGUFValueType.FLOAT32, GGUFValueType.STRING,
                                 GGUFValueType.BOOL, GGUFValueType.ARRAY)

#: ``clip.vision.*`` keys llama.cpp's multimodal loader reads for qwen2vl_merger: key -> GGUF types.
MMPROJ_KEYS: dict[str, list[GGUFValueType]] = {
    "clip.projector_type": [_STR],
    "clip.has_vision_encoder": [_BOOL],
    "clip.vision.image_size": [_U32],
    "clip.vision.patch_size": [_U32],
    "clip.vision.embedding_length": [_U32],
    "clip.vision.feed_forward_length": [_U32],
    "clip.vision.projection_dim": [_U32],
    "clip.vision.block_count": [_U32],
    "clip.vision.attention.head_count": [_U32],
    "clip.vision.attention.layer_norm_epsilon": [_F32],
    "clip.vision.image_mean": [_ARR, _F32],
    "clip.vision.image_std": [_ARR, _F32],
}


@check("metadata.mmproj", "metadata", requires=("file.mmproj_readable", "metadata.hparams"))
def mmproj_metadata(ctx: Context):
    from so8t.gguf import vision_names

    mm = Context(ctx.mmproj_path)
    mm.reader = ctx.mmproj_reader
    arch = typed_value(mm, "general.architecture", [_STR])
    expect(arch == vision_names.ARCHITECTURE, f"mmproj general.architecture is {arch!r}, expected 'clip'")
    values = {key: typed_value(mm, key, types) for key, types in MMPROJ_KEYS.items()}
    expect(values["clip.projector_type"] == vision_names.PROJECTOR_TYPE,
           f"clip.projector_type {values['clip.projector_type']!r}, expected {vision_names.PROJECTOR_TYPE!r}")
    expect(values["clip.has_vision_encoder"] is True, "clip.has_vision_encoder is false")
    hidden = hparams(ctx)["embedding_length"]
    proj = values["clip.vision.projection_dim"]
    expect(proj == hidden, f"mmproj projection_dim {proj} != text embedding_length {hidden}: llama.cpp refuses the "
           "pair", measured=proj, bound=hidden)
    expect(len(values["clip.vision.image_mean"]) == 3 and len(values["clip.vision.image_std"]) == 3,
           "image_mean / image_std need 3 channels")
    return passed(f"clip / qwen2vl_merger, projection {proj} = text hidden", measured=proj, bound=hidden)
