"""The ``multipos`` command: ``list``, ``demo`` and ``--version``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

import multipos
from multipos import plot

DOMAINS = ("vision", "graph", "documents", "llm")


def _import_domains() -> dict[str, str | None]:
    """Import every domain subpackage; map name -> None if loaded, else why not."""
    status: dict[str, str | None] = {}
    for domain in DOMAINS:
        try:
            with warnings.catch_warnings():
                # PyTorch Geometric's import-time use of torch.jit.script warns on torch >= 2.10.
                warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated")
                importlib.import_module(f"multipos.{domain}")
            status[domain] = None
        except ImportError as err:
            status[domain] = f"needs `pip install multipos[{domain}]` ({err.name or err})"
    return status


def _cmd_list(args: argparse.Namespace) -> int:
    status = _import_domains()
    names = multipos.list_schemes(args.pattern)
    if not names:
        print(f"no scheme matches {args.pattern!r}")
        return 1
    width = max(len(n) for n in names)
    for name in names:
        spec = multipos.get_scheme(name)
        print(f"{name:<{width}}  [{spec.domain}] {spec.summary}")
        print(f"{'':<{width}}  {spec.paper}")
        for integration in spec.integrations.values():
            print(f"{'':<{width}}  {integration.usage}")
    for domain, why in status.items():
        if why is not None:
            print(f"({domain} schemes not listed: {why})")
    return 0


def _scores(
    rope: multipos.RotaryEmbedding,
    q: torch.Tensor,
    k: torch.Tensor,
    pq: torch.Tensor,
    pk: torch.Tensor,
) -> torch.Tensor:
    cos_q, sin_q = rope(pq)
    cos_k, sin_k = rope(pk)
    qa = multipos.apply_rotary(q, cos_q, sin_q, layout=rope.layout)
    kb = multipos.apply_rotary(k, cos_k, sin_k, layout=rope.layout)
    return (qa * kb).sum(-1)


def _relative_property(generator: torch.Generator) -> tuple[float, float]:
    """Largest change of RoPE scores when every position is shifted, 1-D and 2-D."""
    worst = []
    for rope in (
        multipos.RotaryEmbedding(64),
        multipos.RotaryEmbedding(64, num_axes=2, base=100.0, layout="interleaved"),
    ):
        axes = rope.num_axes
        q = torch.randn(256, 64, generator=generator, dtype=torch.float64)
        k = torch.randn(256, 64, generator=generator, dtype=torch.float64)
        pq = torch.rand(axes, 256, generator=generator, dtype=torch.float64) * 1000
        pk = torch.rand(axes, 256, generator=generator, dtype=torch.float64) * 1000
        shift = torch.randn(axes, 1, generator=generator, dtype=torch.float64) * 5000

        before = _scores(rope, q, k, pq, pk)
        after = _scores(rope, q, k, pq + shift, pk + shift)
        worst.append((before - after).abs().max().item())
    return worst[0], worst[1]


def _rope_kernel(size: int = 65, dim: int = 64, base: float = 100.0) -> torch.Tensor:
    """Similarity of a centre query to every key of a ``size x size`` grid under 2-D RoPE.

    With q = k = (1, 0, 1, 0, ...) the score is the sum over channel pairs of
    cos(offset * frequency), the kernel that axial RoPE imposes on attention.
    """
    rope = multipos.RotaryEmbedding(dim, num_axes=2, base=base, layout="interleaved")
    grid = multipos.build_grid_positions((size, size)).patches
    centre = torch.full((2, 1), float(size // 2))
    x = torch.zeros(dim)
    x[0::2] = 1.0
    cos_c, sin_c = rope(centre)
    cos_g, sin_g = rope(grid)
    q = multipos.apply_rotary(x, cos_c, sin_c, layout="interleaved")
    k = multipos.apply_rotary(x, cos_g, sin_g, layout="interleaved")
    return (k @ q[0]).reshape(size, size) / (dim // 2)


RESULTS = {
    "resolution_generalization": plot.resolution_figure,
    "graph_direction": plot.graph_direction_figure,
}


def _demo_results(folder: Path, out: Path, pictures: bool) -> None:
    """Plot the benchmark results found in ``folder`` (JSON lines the benchmarks print)."""
    print(f"[results] benchmark JSON lines in {folder}/*.jsonl:")
    for bench, figure in RESULTS.items():
        rows = plot.read_results(folder, bench) if folder.is_dir() else []
        if not rows:
            print(
                f"  {bench}: no results; make them with "
                f"`python benchmarks/{bench}.py > {folder / bench}.jsonl`"
            )
        elif pictures:
            try:
                fig = figure(rows)
            except ValueError as err:
                # A benchmark still running has printed its setup rows but no result yet.
                print(f"  {bench}: {len(rows)} rows, nothing to plot yet ({err})")
                continue
            path = plot.save(fig, out / "results" / f"{bench}.png")
            print(f"  {bench}: {len(rows)} rows -> {path}")
        else:
            print(f"  {bench}: {len(rows)} rows (no picture without matplotlib)")


def _cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    print(f"multipos {multipos.__version__} demo -> {out.resolve()}")
    pictures = plot.available()
    if not pictures:
        print(f"(pictures skipped: matplotlib is not installed; `{plot.INSTALL_HINT}`)")
    print("[core] rotary scores depend only on relative position (float64, 256 random pairs):")
    one_d, two_d = _relative_property(g)
    print(f"  1-D RoPE, positions in [0, 1000), shift ~ N(0, 5000): max |change| = {one_d:.2e}")
    print(f"  2-D axial RoPE, same test on each axis:              max |change| = {two_d:.2e}")
    kernel = _rope_kernel()
    centre, corner = float(kernel[32, 32]), float(kernel[0, 0])
    print(
        f"  2-D RoPE similarity kernel (65x65 offsets, head dim 64, base 100): "
        f"centre {centre:.2f}, corner {corner:.2f}"
    )
    (out / "core_demo.json").write_text(
        json.dumps(
            {
                "rope_1d_shift_change": one_d,
                "rope_2d_shift_change": two_d,
                "rope_2d_kernel_centre": centre,
                "rope_2d_kernel_corner": corner,
            },
            indent=2,
        )
    )
    if pictures:
        path = plot.save(
            plot.rope_kernel_figure(kernel, head_dim=64, base=100.0), out / "rope_2d_kernel.png"
        )
        print(f"  picture: {path}")
        path = plot.save(plot.irpe_buckets_figure(14), out / "irpe_buckets.png")
        print(f"  iRPE product and cross buckets seen from the centre of a 14x14 grid: {path}")
    for domain, why in _import_domains().items():
        if why is not None:
            print(f"[{domain}] skipped: {why}")
            continue
        try:
            demo = importlib.import_module(f"multipos.{domain}.demo")
        except ModuleNotFoundError as err:
            if err.name != f"multipos.{domain}.demo":
                raise
            continue
        print(f"[{domain}]")
        demo.run_demo(out)
    _demo_results(Path(args.results), out, pictures)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multipos", description="Position schemes for structured and multimodal data."
    )
    parser.add_argument("--version", action="version", version=f"multipos {multipos.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="list registered schemes with their papers")
    p_list.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'rope*'")
    p_list.set_defaults(func=_cmd_list)
    p_demo = sub.add_parser("demo", help="run the demo of every installed domain")
    p_demo.add_argument("--out", default="demo-output", help="folder for the demo's files")
    p_demo.add_argument(
        "--results",
        default="benchmarks/results",
        help="folder of benchmark JSON lines (*.jsonl) to plot, e.g. the output of "
        "`python benchmarks/graph_direction.py > benchmarks/results/graph_direction.jsonl`",
    )
    p_demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
