"""Graph builders and strategies shared by the graph tests."""

from __future__ import annotations

import torch
from hypothesis import strategies as st


def random_graph(n: int, p: float, seed: int, directed: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    adj = torch.rand(n, n, generator=g) < p
    adj.fill_diagonal_(False)
    if not directed:
        adj = torch.triu(adj, 1)
        adj = adj | adj.T
    else:
        # orient each sampled pair one way, a few both ways
        up = torch.triu(adj, 1)
        flip = torch.rand(n, n, generator=g) < 0.5
        both = torch.rand(n, n, generator=g) < 0.15
        fwd = up & ~flip
        bwd = (up & flip).T
        adj = fwd | bwd | (up & both) | (up & both).T
    # a path keeps it connected
    path = torch.arange(n - 1)
    adj[path, path + 1] = True
    if not directed:
        adj[path + 1, path] = True
    return adj.nonzero().t().contiguous()


def permute(edge_index: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Relabel node ``i`` as ``perm[i]``."""
    return perm[edge_index]


def reverse(edge_index: torch.Tensor) -> torch.Tensor:
    return edge_index.flip(0)


graph_params = st.tuples(
    st.integers(min_value=5, max_value=24),
    st.floats(min_value=0.05, max_value=0.5),
    st.integers(min_value=0, max_value=10_000),
)


def simple_and_untied(values: torch.Tensor, vectors: torch.Tensor, mask: torch.Tensor) -> bool:
    """Spectrum simple (gaps > 1e-6) and each column's largest-magnitude entry unique."""
    v = values[mask].double()
    if v.numel() > 1 and (v[1:] - v[:-1]).min() < 1e-6:
        return False
    mag = vectors[..., mask].abs().double()
    if mag.shape[0] < 2:
        return True
    top2 = mag.topk(2, dim=0).values
    return bool(((top2[0] - top2[1]) > 1e-5).all())
