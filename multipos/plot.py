"""Figures of the position schemes and of the benchmark results, drawn with matplotlib.

matplotlib is the optional ``[plot]`` extra: nothing here imports it before a figure is asked
for, so ``import multipos`` stays cheap and works without it. Figures are built as
``matplotlib.figure.Figure`` objects on the Agg canvas (no screen, no ``pyplot`` state), each
with a title, labelled axes, a colour bar or legend, and a caption line that says what to look
for. Functions return the figure; :func:`save` writes it as PNG.
"""

from __future__ import annotations

import json
import statistics
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from multipos.bias import irpe_buckets, irpe_num_buckets
from multipos.positions import build_grid_positions

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

INSTALL_HINT = 'pip install "multipos[plot]"'
CAPTION_GID = "caption"
_CAPTION_SIZE = 9.0


def available() -> bool:
    """Whether matplotlib can be imported (pictures need the ``[plot]`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def new_figure(
    title: str,
    caption: str,
    *,
    shape: tuple[int, int] = (1, 1),
    size: tuple[float, float] = (6.4, 5.0),
) -> tuple[Figure, list[Axes]]:
    """A figure with a title, a grid of panels and a caption line under them.

    Args:
        title: Figure title.
        caption: What to look for; wrapped to the figure width and set under the panels
            (its text artist carries ``gid="caption"``).
        shape: ``(rows, columns)`` of panels.
        size: Width and height in inches.

    Returns:
        ``(figure, panels)``, panels in row-major order.

    Raises:
        ImportError: If matplotlib is not installed (with the command that installs it).
    """
    try:
        import matplotlib  # noqa: F401  (first: a missing or blocked package stops here)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(f"pictures need matplotlib: {INSTALL_HINT}") from err
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=12, fontweight="bold")
    # The caption is the figure's x label, so the layout engine keeps room for it.
    width = max(20, int(size[0] * 72 / (0.56 * _CAPTION_SIZE)))  # characters per line
    text = fig.supxlabel("\n".join(textwrap.wrap(caption, width)), fontsize=_CAPTION_SIZE)
    text.set_gid(CAPTION_GID)
    panels = fig.subplots(*shape, squeeze=False).ravel().tolist()
    return fig, panels


def save(fig: Figure, path: str | Path, *, dpi: int = 110) -> Path:
    """Write ``fig`` as PNG (folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
    return path


def rope_kernel_figure(kernel: Tensor, *, head_dim: int, base: float) -> Figure:
    """The 2-D RoPE similarity kernel: the score of a centre query against every key offset.

    Args:
        kernel: ``(H, W)`` scores, the query at the centre cell (odd ``H`` and ``W``).
        head_dim, base: The rotary configuration, for the title.

    Raises:
        ValueError: If ``kernel`` is not 2-D with odd sides.
    """
    if kernel.dim() != 2 or kernel.shape[0] % 2 == 0 or kernel.shape[1] % 2 == 0:
        raise ValueError(f"kernel must be (H, W) with odd sides, got {tuple(kernel.shape)}")
    rows, cols = kernel.shape
    fig, (ax,) = new_figure(
        f"2-D axial RoPE similarity kernel (head dim {head_dim}, base {base:g})",
        "Look for: the peak of 1 at zero offset and the fall-off with distance. Axial RoPE "
        "gives half the channel pairs to rows and half to columns, so the kernel is the sum of "
        "a row term and a column term: cross-shaped ridges along both axes, not a round bump.",
        size=(6.4, 6.0),
    )
    r, c = rows // 2, cols // 2
    image = ax.imshow(
        kernel.detach().float().cpu().numpy(),
        origin="lower",
        extent=(-c - 0.5, c + 0.5, -r - 0.5, r + 0.5),
        cmap="viridis",
    )
    ax.set_xlabel("column offset, key - query (patches)")
    ax.set_ylabel("row offset, key - query (patches)")
    ax.plot([0], [0], marker="+", color="white", markersize=12, label="query")
    ax.legend(loc="upper right", fontsize=8)
    bar = fig.colorbar(image, ax=ax, shrink=0.85)
    bar.set_label("score q·k / (D/2)  (mean cosine over channel pairs)")
    return fig


def irpe_buckets_figure(size: int = 14, *, ratio: float = 1.9) -> Figure:
    """iRPE buckets of every key of a ``size x size`` grid seen from the centre query.

    One row per method (``product``, ``cross``), one panel per axis (row bucket, column
    bucket), from :func:`multipos.bias.irpe_buckets`. Product's bucket id
    ``row * side + column`` is split into its two parts; cross has one id per axis.

    Raises:
        ValueError: If ``size`` < 2 or ``ratio`` is not positive.
    """
    if size < 2:
        raise ValueError(f"size must be >= 2, got {size}")
    side = round(irpe_num_buckets("product", ratio) ** 0.5)
    grid = build_grid_positions((size, size)).patches
    mid = size // 2
    centre = mid * size + mid
    product = irpe_buckets(grid, method="product", ratio=ratio)[0, centre].view(size, size)
    cross = irpe_buckets(grid, method="cross", ratio=ratio)[:, centre].view(2, size, size)
    panels = [
        (f"product: row part of the id (id // {side})", product // side),
        (f"product: column part of the id (id mod {side})", product % side),
        ("cross: row id", cross[0]),
        ("cross: column id", cross[1]),
    ]
    row = (product % side)[mid].tolist()  # buckets along the query's row, by key column
    exact = 0  # keys up to this many patches away have a bucket of their own
    while mid + exact + 1 < size and all(
        row.count(b) == 1 for b in (row[mid - exact - 1], row[mid + exact + 1])
    ):
        exact += 1
    fig, axes = new_figure(
        f"iRPE buckets seen from the centre query of a {size}x{size} patch grid (ratio {ratio:g})",
        f"Look for: keys up to ±{exact} patch(es) from the query (black square) get a bucket "
        "of their own per axis, farther ones share logarithmically wider buckets, and the "
        f"ends are clipped ({side} buckets per axis). Product looks up one 2-D table with the "
        "(row, column) pair; cross adds a row lookup and a column lookup.",
        shape=(2, 2),
        size=(10.0, 9.8),
    )
    for ax, (title, ids) in zip(axes, panels, strict=True):
        first = int(ids.min()) // side * side
        image = ax.imshow(
            ids.numpy(), cmap="RdBu_r", vmin=first - 0.5, vmax=first + side - 0.5, origin="upper"
        )
        for i, values in enumerate(ids.tolist()):
            for j, value in enumerate(values):
                dark = abs(value - first - (side - 1) / 2) > side / 4
                ax.text(j, i, str(value), ha="center", va="center", fontsize=6.5,
                        color="white" if dark else "black")  # fmt: skip
        ax.plot([mid], [mid], marker="s", markersize=12, mfc="none", mec="black", mew=2.2,
                linestyle="none")  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("key column (patch index)")
        ax.set_ylabel("key row (patch index)")
        bar = fig.colorbar(image, ax=ax, ticks=range(first, first + side), shrink=0.9)
        bar.set_label("bucket id")
    return fig


def read_results(folder: str | Path, bench: str) -> list[dict[str, Any]]:
    """The JSON rows of benchmark ``bench`` in every ``*.jsonl`` file of ``folder``.

    Benchmarks print one JSON object per line and may follow them with a plain-text table;
    lines that are not JSON objects are skipped. Files are read in name order.
    """
    rows: list[dict[str, Any]] = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("bench") == bench:
                rows.append(row)
    return rows


def resolution_figure(rows: Sequence[dict[str, Any]]) -> Figure:
    """Top-1 accuracy against test resolution, one line per scheme, one panel per read-out.

    ``rows`` are the lines of ``benchmarks/resolution_generalization.py`` (``case``,
    ``resolution``, ``train_resolution``, ``pooling``, ``ours``, ``std``, ``seeds``).

    Raises:
        ValueError: If ``rows`` holds no accuracy row.
    """
    rows = [r for r in rows if str(r.get("metric", "")).startswith("top1_")]
    if not rows:
        raise ValueError("no top1_* rows of resolution_generalization")
    poolings = list(dict.fromkeys(str(r["pooling"]) for r in rows))
    cases = list(dict.fromkeys(str(r["case"]) for r in rows))
    train = int(rows[0]["train_resolution"])
    seeds = max(int(r.get("seeds", 1)) for r in rows)
    fig, axes = new_figure(
        f"Resolution generalisation: trained at {train}x{train}, tested on larger canvases",
        "Look for: how far each line falls from its value at the training size (dotted line); "
        "a flat line means the scheme carries to resolutions it never saw. "
        f"Error bars: std over {seeds} seed(s); the digit keeps its pixel size, the canvas "
        "(and the patch grid) grows.",
        shape=(1, len(poolings)),
        size=(5.2 * len(poolings) + 2.4, 5.2),
    )
    colours = _colours(len(cases))
    sizes = sorted({int(r["resolution"]) for r in rows})
    # Cases are shifted a little along x so their error bars do not hide each other.
    step = 0.012 * (sizes[-1] - sizes[0] if len(sizes) > 1 else train)
    for ax, pooling in zip(axes, poolings, strict=True):
        for i, (colour, case) in enumerate(zip(colours, cases, strict=True)):
            shift = (i - (len(cases) - 1) / 2) * step
            mine = sorted(
                (r for r in rows if r["case"] == case and r["pooling"] == pooling),
                key=lambda r: int(r["resolution"]),
            )
            if mine:
                ax.errorbar(
                    [int(r["resolution"]) + shift for r in mine],
                    [100 * float(r["ours"]) for r in mine],
                    yerr=[100 * float(r.get("std", 0.0)) for r in mine],
                    marker="o",
                    capsize=3,
                    color=colour,
                    label=case,
                )
        ax.axvline(train, color="grey", linestyle=":", label="training size")
        ax.set_xticks(sizes, [f"{s}\n({s / train:g}x)" for s in sizes])
        ax.set_title(f"read-out: {pooling}", fontsize=10)
        ax.set_xlabel("test canvas side (pixels)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", title="scheme", fontsize=8)
    return fig


def graph_direction_figure(rows: Sequence[dict[str, Any]]) -> Figure:
    """Test accuracy per graph PE on DAG reachability, mean and std over seeds.

    ``rows`` are the lines of ``benchmarks/graph_direction.py``: per-seed rows
    (``case = "<pe>/seed<i>"``, ``metric = "test_accuracy"``), else the per-PE summaries, and
    the ``setup`` row with the majority-class accuracy.

    Raises:
        ValueError: If ``rows`` holds no accuracy row.
    """
    per_seed: dict[str, list[float]] = {}
    for r in rows:
        if r.get("metric") == "test_accuracy":
            per_seed.setdefault(str(r["case"]).split("/")[0], []).append(float(r["ours"]))
    summary = {
        str(r["case"]): (float(r["ours"]), float(r.get("std", 0.0)))
        for r in rows
        if str(r.get("metric", "")).startswith("test_accuracy_mean")
    }
    if per_seed:
        summary = {
            pe: (statistics.fmean(a), statistics.stdev(a) if len(a) > 1 else 0.0)
            for pe, a in per_seed.items()
        }
    if not summary:
        raise ValueError("no test_accuracy rows of graph_direction")
    majority = [float(r["ours"]) for r in rows if r.get("metric") == "majority_accuracy"]
    seeds = max((len(a) for a in per_seed.values()), default=0)
    fig, (ax,) = new_figure(
        "Edge direction on DAG reachability: which graph PE helps",
        "Look for: bars above 'none' (no PE). Every model sees the undirected graph; the "
        "Laplacian PE is symmetrised too, the magnetic and random-walk PEs see edge "
        "direction. Error bars: std over seeds"
        + (f" ({seeds}, dots)" if seeds else "")
        + "; dashed: always predicting the majority class.",
        size=(8.4, 5.2),
    )
    names = list(summary)
    means = [100 * summary[n][0] for n in names]
    stds = [100 * summary[n][1] for n in names]
    ax.bar(names, means, yerr=stds, capsize=4, color="#7aa6c2", label="mean ± std")
    for x, name in enumerate(names):
        values = per_seed.get(name, [])
        ax.plot([x] * len(values), [100 * v for v in values], "k.", label="_seed")
    if seeds:
        ax.plot([], [], "k.", label="one seed")
    if majority:
        ax.axhline(100 * majority[0], color="black", linestyle="--", label="majority class")
    low = min([*means, *(100 * m for m in majority)])
    ax.set_ylim(max(0.0, low - 10.0), 100.0)
    ax.set_xlabel("position encoding")
    ax.set_ylabel("test accuracy (%), nodes other than the source")
    fig.legend(loc="outside right upper", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]
