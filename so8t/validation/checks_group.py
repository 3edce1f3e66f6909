"""Group-law checks on the SO8T sidecar: its rotations are in SO(8) and are the map of its generators.

The membership test is the shared oracle ``so8t.group.in_so8`` / ``so8_defect`` (max ``|R^T R - I|``,
max ``|det R - 1|``) with its dtype tolerance ``default_tolerance(float64) = 10 * 8 * eps``. The stored
rotations are float64; ``R == map(A(generators))`` is recomputed with ``so8t.group.rotation`` in float64
from the stored float32 generators, within ``default_tolerance(float64) * (1 + max ||A||_1)`` (the
rounding of an 8x8 matrix function grows with the norm of its argument).

With ``--so8t-model``, the sidecar's generators must equal the checkpoint's gates file bit for bit
(the sidecar copies them), and the safety head the checkpoint's.
"""

from __future__ import annotations

import numpy as np

from so8t.safety import STATE_PREFIX
from so8t.validation.context import CheckFailed, Context, check, expect, passed, skipped


@check("file.sidecar_readable", "file")
def sidecar_readable(ctx: Context):
    if ctx.sidecar_path is None:
        return skipped("no sidecar given or found next to the GGUF (<stem>.so8t.gguf)")
    from so8t.errors import So8tError
    from so8t.gguf.sidecar_reader import read_sidecar

    try:
        ctx.sidecar = read_sidecar(ctx.sidecar_path)
    except So8tError as err:
        raise CheckFailed(f"sidecar unreadable: {err}") from err
    except Exception as err:  # read_sidecar should wrap everything; a bad file still must not crash us
        raise CheckFailed(f"sidecar unreadable: {ctx.sidecar_path}: {type(err).__name__}: {err}") from err
    side = ctx.sidecar
    return passed(f"{len(side.rotations)} gates over {side.num_layers} layers, hidden {side.hidden_size}, "
                  f"safety head {'yes' if side.safety_weights is not None else 'no'}", measured=len(side.rotations))


@check("group.rotations_in_so8", "group", requires=("file.sidecar_readable",))
def rotations_in_so8(ctx: Context):
    import torch

    from so8t import group

    tol = group.default_tolerance(torch.float64)
    worst, worst_key = 0.0, None
    for key, r in sorted(ctx.sidecar.rotations.items()):
        t = torch.from_numpy(np.ascontiguousarray(r))
        if not torch.isfinite(t).all():
            raise CheckFailed(f"rotation {key} has NaN/Inf entries", measured="nan", bound=tol)
        orth, det = group.so8_defect(t)
        defect = max(orth, det)
        if defect > worst:
            worst, worst_key = defect, key
        if not group.in_so8(t, tol=tol):
            kind = "det != +1 (a reflection)" if det > tol and orth <= tol else "not orthogonal"
            raise CheckFailed(f"layer {key[0]} gate {key[1]}: {kind}: max|R^T R - I| = {orth:.2e}, "
                              f"max|det R - 1| = {det:.2e}", measured=defect, bound=tol)
    return passed(f"{len(ctx.sidecar.rotations)} x {group.ROTATION_DIM}x8 blocks in SO(8) (worst {worst_key})",
                  measured=worst, bound=tol)


@check("group.rotations_match_generators", "group", requires=("file.sidecar_readable",))
def rotations_match_generators(ctx: Context):
    import torch

    from so8t import group

    side = ctx.sidecar
    worst = 0.0
    base = group.default_tolerance(torch.float64)
    bound_used = base
    for key, g in sorted(side.generators.items()):
        g64 = torch.from_numpy(np.ascontiguousarray(g)).to(torch.float64)
        expect(bool(torch.isfinite(g64).all()), f"generators {key} have NaN/Inf entries")
        r = group.rotation(g64, side.rotation_map)
        a_norm = float(group.skew(g64).abs().sum(dim=-1).amax()) if g64.numel() else 0.0
        bound = base * (1.0 + a_norm)
        err = float((r - torch.from_numpy(np.ascontiguousarray(side.rotations[key]))).abs().max())
        if err > worst:
            worst, bound_used = err, bound
        expect(err <= bound, f"layer {key[0]} gate {key[1]}: stored rotation differs from "
               f"{side.rotation_map}(generators) by {err:.2e}", measured=err, bound=bound)
    return passed(f"every rotation equals {side.rotation_map}(A(generators))", measured=worst, bound=bound_used)


@check("group.sidecar_matches_checkpoint", "group", requires=("file.sidecar_readable",))
def sidecar_matches_checkpoint(ctx: Context):
    if ctx.so8t_model is None:
        return skipped("no --so8t-model given")
    from so8t.checkpoint.so8t_dir import SO8TCheckpoint

    ckpt = ctx.cache.get("checkpoint") or SO8TCheckpoint(ctx.so8t_model)
    ctx.cache["checkpoint"] = ckpt
    side = ctx.sidecar
    expect(side.num_layers == ckpt.num_layers and side.hidden_size == ckpt.hidden_size,
           f"sidecar is for {side.num_layers} layers x hidden {side.hidden_size}, the checkpoint has "
           f"{ckpt.num_layers} x {ckpt.hidden_size}")
    expect(side.rotation_map == ckpt.rotation_map.value,
           f"sidecar map {side.rotation_map!r}, checkpoint map {ckpt.rotation_map.value!r}")
    for (layer, gate), g in side.generators.items():
        want = ckpt.gate_generators(layer, gate).detach().float().numpy()
        expect(np.array_equal(g, want), f"layer {layer} gate {gate}: sidecar generators differ from the "
               "checkpoint's gates file")
    head = ckpt.safety_head_state()
    expect((head is None) == (side.safety_weights is None), "safety head present in only one of sidecar and checkpoint")
    if head is not None:
        for suffix, value in side.safety_weights.items():
            want = head[STATE_PREFIX + suffix].detach().float().numpy()
            expect(np.array_equal(value, want), f"safety_head.{suffix} differs from the checkpoint")
    return passed(f"{len(side.generators)} generator sets and the safety head equal the checkpoint's bit for bit",
                  measured=len(side.generators))


@check("group.safety_head_finite", "group", requires=("file.sidecar_readable",))
def safety_head_finite(ctx: Context):
    weights = ctx.sidecar.safety_weights
    if weights is None:
        return skipped("the sidecar has no safety head")
    bad = {k: int(np.size(v) - np.count_nonzero(np.isfinite(v))) for k, v in weights.items()}
    expect(not any(bad.values()), f"safety head has NaN/Inf: {bad}", measured=sum(bad.values()), bound=0)
    return passed("safety head weights finite", measured=0, bound=0)
