"""A directed graph drawn with its Laplacian PE and its magnetic Laplacian PE as node colours."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import networkx as nx
import torch
from torch import Tensor

from multipos.graph.laplacian import laplacian_pe
from multipos.graph.magnetic import magnetic_laplacian_pe
from multipos.plot import new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_NODE_SIZE = 260.0  # points^2


def graph_layout(
    edge_index: Tensor, num_nodes: int
) -> tuple[dict[int, tuple[float, float]], tuple[str, str]]:
    """Node positions and axis labels: DAGs by topological generation, others by springs.

    A DAG's node ``u`` sits at ``x`` = its topological generation (edges on the longest path
    from a source to ``u``, :func:`networkx.topological_generations`), so edges point left to
    right; a graph with cycles gets a seeded spring layout.
    """
    graph = nx.DiGraph()
    graph.add_nodes_from(range(num_nodes))
    graph.add_edges_from(edge_index.t().tolist())
    if nx.is_directed_acyclic_graph(graph):
        for depth, nodes in enumerate(nx.topological_generations(graph)):
            for node in nodes:
                graph.nodes[node]["generation"] = depth
        pos = nx.multipartite_layout(graph, subset_key="generation")
        layout = {u: (float(graph.nodes[u]["generation"]), float(p[1])) for u, p in pos.items()}
        return layout, ("topological generation", "spread within a generation")
    pos = nx.spring_layout(graph, seed=0)
    layout = {u: (float(p[0]), float(p[1])) for u, p in pos.items()}
    return layout, ("spring layout x (no unit)", "spring layout y (no unit)")


def _draw(
    ax: Axes,
    layout: dict[int, tuple[float, float]],
    edge_index: Tensor,
    values: Tensor,
    limit: float,
    cmap: str,
) -> Any:
    for src, dst in edge_index.t().tolist():
        ax.annotate(
            "",
            xy=layout[dst],
            xytext=layout[src],
            arrowprops={
                "arrowstyle": "-|>",
                "color": "0.45",
                "shrinkA": 9,
                "shrinkB": 9,
                "mutation_scale": 11,
            },
            zorder=1,
        )
    nodes = sorted(layout)
    points = ax.scatter(
        [layout[u][0] for u in nodes],
        [layout[u][1] for u in nodes],
        c=values[nodes].tolist(),
        cmap=cmap,
        vmin=-limit,
        vmax=limit,
        s=_NODE_SIZE,
        edgecolors="black",
        linewidths=0.6,
        zorder=2,
    )
    for u in nodes:
        dark = abs(float(values[u])) > 0.6 * limit
        ax.text(*layout[u], str(u), ha="center", va="center", fontsize=7, zorder=3,
                color="white" if dark else "black")  # fmt: skip
    ax.margins(0.12)
    ax.set_yticks([])
    return points


def graph_pe_figure(edge_index: Tensor, num_nodes: int, *, q: float = 0.25) -> Figure:
    r"""Draw a directed graph four times per row, coloured by its position encodings.

    Top row: components 1-3 of the (symmetrised) Laplacian PE (:func:`laplacian_pe`), and
    component 1 of the graph with every edge reversed. Bottom row: the first magnetic
    Laplacian eigenvector (:func:`magnetic_laplacian_pe`, potential ``q`` relative): real
    part, imaginary part, phase :math:`\arg v_u`, and the phase of the reversed graph, which
    is the negative (reversal conjugates the PE).

    Args:
        edge_index: ``(2, E)`` directed edges ``source -> target``.
        num_nodes: ``N``.
        q: Magnetic potential, relative (see :func:`magnetic_laplacian`).

    Returns:
        The figure (save it with :func:`multipos.plot.save`).

    Raises:
        ValueError: If the graph has fewer than 4 nodes (3 Laplacian components are drawn).
        ImportError: If matplotlib is not installed.
    """
    if num_nodes < 4:
        raise ValueError(f"need at least 4 nodes to draw 3 Laplacian components, got {num_nodes}")
    reverse = edge_index.flip(0)
    lap = laplacian_pe(edge_index, num_nodes, k=3)
    lap_rev = laplacian_pe(reverse, num_nodes, k=3)
    mag = magnetic_laplacian_pe(edge_index, num_nodes, k=1, q=q)
    mag_rev = magnetic_laplacian_pe(reverse, num_nodes, k=1, q=q)
    phase = torch.atan2(mag.imag[:, 0], mag.real[:, 0])
    phase_rev = torch.atan2(mag_rev.imag[:, 0], mag_rev.real[:, 0])
    panels: list[tuple[str, Tensor, Tensor, str, str]] = [
        (f"Laplacian PE {j + 1}", lap.vectors[:, j], lap.vectors, "RdBu_r", "eigenvector entry")
        for j in range(3)
    ]
    panels += [
        ("Laplacian PE 1, edges reversed", lap_rev.vectors[:, 0], lap.vectors, "RdBu_r",
         "eigenvector entry"),
        ("magnetic PE 1, real part", mag.real[:, 0], mag.real, "RdBu_r", "Re v"),
        ("magnetic PE 1, imaginary part", mag.imag[:, 0], mag.imag, "RdBu_r", "Im v"),
        ("magnetic PE 1, phase", phase, phase, "PuOr_r", "arg v (radians)"),
        ("magnetic PE 1 phase, edges reversed", phase_rev, phase, "PuOr_r", "arg v (radians)"),
    ]  # fmt: skip
    fig, axes = new_figure(
        f"A directed graph ({num_nodes} nodes) coloured by its Laplacian and magnetic "
        f"Laplacian PEs (q = {q:g} relative)",
        "Look for: the Laplacian PE is the same for the graph and its reverse (it only sees "
        "the undirected graph); the magnetic PE's phase changes along the edges' direction "
        "and flips sign when every edge is reversed, so it tells sources from sinks. Colours "
        "are symmetric around 0 (white); x is the longest path from a source, in edges.",
        shape=(2, 4),
        size=(17.0, 8.6),
    )
    layout, (xlabel, ylabel) = graph_layout(edge_index, num_nodes)
    for ax, (title, values, scale, cmap, label) in zip(axes, panels, strict=True):
        limit = max(float(scale.abs().max()), 1e-6)
        points = _draw(ax, layout, edge_index, values, limit, cmap)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        fig.colorbar(points, ax=ax, shrink=0.85).set_label(label)
    return fig
