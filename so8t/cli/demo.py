"""``so8t demo``: a quick look at SO(8) gates and the laws they obey (no model needed)."""

from __future__ import annotations

from so8t.cli.common import add_command


def register(sub) -> None:
    p = add_command(sub, "demo", "print a few SO(8) gates and check the group laws on them")
    p.add_argument("--hidden-size", type=int, default=64, help="width of the gated vectors")
    p.add_argument("--seed", type=int, default=0, help="seed of the random gates")
    p.add_argument("--map", choices=["exp", "cayley"], default="exp", help="generator -> rotation map")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from so8t import group
    from so8t.gates import NonCommutativeGate, SO8TRotationGate

    gate = SO8TRotationGate(args.hidden_size, init="random", map=args.map, seed=args.seed).double()
    pair = NonCommutativeGate(args.hidden_size, init="random", map=args.map, seed=args.seed + 10).double()
    r = gate.rotations().detach()
    print(f"SO8T rotation gate: hidden {args.hidden_size} = {len(r)} blocks of SO(8), map {args.map}")
    torch.set_printoptions(precision=3, sci_mode=False)
    print("block 0 rotation R[0]:")
    print(r[0])
    orth, det = group.so8_defect(r)
    tol = group.default_tolerance(r.dtype)
    print(f"max |R^T R - I| = {orth:.2e}   max |det R - 1| = {det:.2e}   (tolerance {tol:.1e})")
    x = torch.randn(4, args.hidden_size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = gate(x)
    norm_err = (y.norm(dim=-1) - x.norm(dim=-1)).abs().max().item()
    print(f"norm preserved by the gate: max |  |xR| - |x|  | = {norm_err:.2e}")
    forward = pair(x)
    swapped = x @ pair.cmd.dense() @ pair.safe.dense()
    print(
        "non-commutative pair: |x R_safe R_cmd - x R_cmd R_safe| = "
        f"{(forward - swapped).abs().max().item():.3f} (order matters)"
    )
    ok = group.in_so8(r) and group.in_so8(pair.rotations().detach()) and norm_err <= tol * 10
    print("all checks passed" if ok else "CHECK FAILED")
    return 0 if ok else 1
