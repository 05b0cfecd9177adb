"""Cost of each vision position scheme, and iRPE against the official implementation.

Part 1 (always): ViT-S/16 at 224, batch 8, CPU. Forward (eval, no grad) and forward+backward
(train mode) time of ``vit_small_patch16_multipos_224`` with each scheme, as a ratio to timm's
``vit_small_patch16_224`` (learned absolute table, nothing else), alternating runs. The first
row, ``control_same_model``, times a second instance of that baseline against it: how far two
identical models differ in the same run, the resolution of the other ratios.

Part 2 (with ``--cream DIR``): the attention core of one ViT-S layer (B=8, H=6, L=197, D=64)
with iRPE, ours (:class:`multipos.IRPE`: buckets built once, gather lookups, fused SDPA with
the bias as ``attn_mask`` unless values need the probabilities) against the official code's
``RPEAttention`` computation (``irpe.py`` from microsoft/Cream ``iRPE/DeiT-with-iRPE``; its
optional C++ op is not built, so it runs its pure-PyTorch path). Point ``DIR`` at a checkout
of that folder; it is imported, never copied. Outputs are checked equal before timing.

    python benchmarks/vision_overhead.py [--repeats 5] [--cream /path/to/iRPE/DeiT-with-iRPE]

``--processes N`` runs everything in N fresh processes one after another and prints the median
of each row, with every process's ratio in ``ratio_runs``.
"""

from __future__ import annotations

import argparse
import sys
import types
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, median_of_processes, rerun_command, time_alternating

import multipos

BATCH = 8
SCHEMES: list[tuple[str, Any, dict[str, Any]]] = [
    ("rope_axial_2d", "rope_axial_2d", {}),
    ("rope_mixed", "rope_mixed", {}),
    ("gta", "gta", {}),
    ("peg", "peg", {}),
    ("lff", "lff", {}),
    ("irpe_ctx_k", ["ape", "irpe"], {"irpe": {"mode": "contextual", "on": "k"}}),
    ("irpe_bias_k", ["ape", "irpe"], {"irpe": {"mode": "bias", "on": "k"}}),
    ("irpe_ctx_qkv", ["ape", "irpe"], {"irpe": {"mode": "contextual", "on": "qkv"}}),
]
# DESIGN.md's budgets: 2-D RoPE, PEG, LFF at most 1.05x the plain timm ViT; GTA at most
# 1.15x; iRPE contextual on k at most 1.10x, on q, k, v at most 1.25x.
BUDGETS = {
    "rope_axial_2d": 1.05,
    "rope_mixed": 1.05,
    "gta": 1.15,
    "peg": 1.05,
    "lff": 1.05,
    "irpe_ctx_k": 1.10,
    "irpe_ctx_qkv": 1.25,
}
# Against the official iRPE code: faster in every mode, forward+backward at most 0.85x.
OFFICIAL_BUDGETS = {"forward_s": 1.0, "forward_backward_s": 0.85}


def _model_overhead(repeats: int, only: set[str] | None) -> None:
    import timm

    import multipos.vision  # noqa: F401  (registers the models)

    torch.manual_seed(0)
    x = torch.randn(BATCH, 3, 224, 224)
    base = timm.create_model("vit_small_patch16_224")
    # The control row times a second instance of the baseline itself (same weights): its
    # distance from 1.0 is what two identical models differ by in this run (memory placement,
    # load), the resolution of every other ratio.
    control = timm.create_model("vit_small_patch16_224")
    control.load_state_dict(base.state_dict())
    cases = [("control_same_model", control)] if not only or "control_same_model" in only else []
    for case, scheme, cfg in SCHEMES:
        if only and case not in only:
            continue
        model = timm.create_model("vit_small_patch16_multipos_224", pos_scheme=scheme, pos_cfg=cfg)
        cases.append((case, model))
    for case, ours in cases:

        def fwd(m: torch.nn.Module) -> Any:
            m.eval()
            with torch.no_grad():
                return m(x)

        def fwd_bwd(m: torch.nn.Module) -> None:
            m.train()
            m.zero_grad(set_to_none=True)
            m(x).sum().backward()

        for metric, step in (("forward_s", fwd), ("forward_backward_s", fwd_bwd)):
            t_ours, t_base = time_alternating(
                lambda s=step, m=ours: s(m),
                lambda s=step, m=base: s(m),
                repeats=repeats,
                warmup=1,
            )
            emit(
                "vision_overhead",
                case,
                metric,
                t_ours,
                t_base,
                budget=BUDGETS.get(case),
                model="vit_small_patch16 224px",
                batch=BATCH,
                baseline_impl="timm vit_small_patch16_224 (learned APE)",
            )


def _load_official(cream: Path) -> Any:
    # The official module imports easydict only for an attribute-access dict.
    if "easydict" not in sys.modules:
        shim = types.ModuleType("easydict")

        class EasyDict(dict):  # type: ignore[type-arg]
            __getattr__ = dict.__getitem__
            __setattr__ = dict.__setitem__  # type: ignore[assignment]

        shim.EasyDict = EasyDict  # type: ignore[attr-defined]
        sys.modules["easydict"] = shim
    sys.path.insert(0, str(cream))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import irpe as official  # type: ignore[import-not-found]
    return official


def _official_core(
    rpe: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> Any:
    # The attention computation of the official RPEAttention.forward, from q, k, v on.
    rpe_q, rpe_k, rpe_v = rpe
    q = q * scale
    attn = q @ k.transpose(-2, -1)
    if rpe_k is not None:
        attn = attn + rpe_k(q)
    if rpe_q is not None:
        attn = attn + rpe_q(k * scale).transpose(2, 3)
    attn = attn.softmax(dim=-1)
    out = attn @ v
    if rpe_v is not None:
        out = out + rpe_v(attn)
    return out


def _fwd_bwd(fn: Any) -> None:
    fn().sum().backward()


MODES = (("bias", "k"), ("contextual", "k"), ("contextual", "qk"), ("contextual", "qkv"))


def _against_official(cream: Path, repeats: int) -> None:
    official = _load_official(cream)
    heads, head_dim, grid = 6, 64, (14, 14)
    positions = multipos.build_grid_positions(grid, num_prefix_tokens=1)
    length = positions.num_tokens
    g = torch.Generator().manual_seed(0)
    for method in ("product", "euclidean"):
        for mode, on in MODES:
            cfg = official.get_rpe_config(
                ratio=1.9,
                method="euc" if method == "euclidean" else method,
                mode=mode,
                shared_head=True,
                skip=1,
                rpe_on=on,
            )
            theirs = official.build_rpe(cfg, head_dim=head_dim, num_heads=heads)
            ours = multipos.IRPE(heads, head_dim, method=method, mode=mode, on=on)
            # Same random tables on both sides (both start at zero).
            with torch.no_grad():
                for side, table in (("q", ours.table_q), ("k", ours.table_k), ("v", ours.table_v)):
                    if table is None:
                        continue
                    table.normal_(0.0, 0.1, generator=g)
                    mod = theirs["qkv".index(side)]
                    name = "lookup_table_bias" if mode == "bias" else "lookup_table_weight"
                    getattr(mod, name).copy_(table)
            q, k, v = (
                torch.randn(BATCH, heads, length, head_dim, generator=g).requires_grad_()
                for _ in range(3)
            )
            scale = head_dim**-0.5
            buckets = ours.buckets(positions.patches)

            run_ours = partial(ours, q, k, v, buckets)
            run_theirs = partial(_official_core, theirs, q, k, v, scale)

            torch.testing.assert_close(run_ours(), run_theirs(), rtol=1e-4, atol=1e-4)

            for metric, ours_fn, theirs_fn in (
                ("forward_s", run_ours, run_theirs),
                ("forward_backward_s", partial(_fwd_bwd, run_ours), partial(_fwd_bwd, run_theirs)),
            ):
                ctx = torch.no_grad() if metric == "forward_s" else torch.enable_grad()
                with ctx:
                    t_ours, t_base = time_alternating(ours_fn, theirs_fn, repeats=repeats, inner=3)
                emit(
                    "irpe_vs_official",
                    f"{method}_{mode}_{on}",
                    metric,
                    t_ours,
                    t_base,
                    budget=OFFICIAL_BUDGETS[metric],
                    shape=[BATCH, heads, length, head_dim],
                    baseline_impl="microsoft/Cream iRPE irpe.py (pure PyTorch path)",
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cream", type=Path, help="path to Cream's iRPE/DeiT-with-iRPE folder")
    parser.add_argument("--only", nargs="*", help="subset of model cases to run")
    parser.add_argument("--skip-models", action="store_true", help="only run part 2")
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    if args.processes > 1:
        median_of_processes(rerun_command(__file__, sys.argv[1:]), args.processes)
        return
    if not args.skip_models:
        _model_overhead(args.repeats, set(args.only) if args.only else None)
    if args.cream is not None:
        _against_official(args.cream, max(args.repeats, 7))


if __name__ == "__main__":
    main()
