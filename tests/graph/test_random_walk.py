from __future__ import annotations

import pytest

pytest.importorskip("torch_geometric", reason="multipos.graph needs the [graph] extra")

import torch
from hypothesis import given

from multipos.graph import directional_random_walk_pe, transition_matrix
from tests.graph._graphs import graph_params, permute, random_graph, reverse


@given(graph_params)
def test_stochastic_and_reverse(params) -> None:
    n, p, seed = params
    ei = random_graph(n, p, seed, directed=True)
    fwd = transition_matrix(ei, n)
    rev = transition_matrix(ei, n, direction="reverse")
    ones = torch.ones(n, dtype=torch.float64)
    torch.testing.assert_close(fwd.sum(1), ones)
    torch.testing.assert_close(rev.sum(1), ones)
    torch.testing.assert_close(rev, transition_matrix(reverse(ei), n))
    pair = directional_random_walk_pe(ei, n, 3, form="pairwise", ppr_alpha=0.2)
    assert pair.shape == (n, n, 8)
    torch.testing.assert_close(pair[..., 2], torch.linalg.matrix_power(fwd, 3).float())
    torch.testing.assert_close(pair[..., 3].sum(1), torch.ones(n))  # PPR rows sum to 1
    node = directional_random_walk_pe(ei, n, 3, ppr_alpha=0.2)
    torch.testing.assert_close(node, pair.diagonal(dim1=0, dim2=1).T)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    pp = directional_random_walk_pe(permute(ei, perm), n, 3, form="pairwise", ppr_alpha=0.2)
    torch.testing.assert_close(pp[perm][:, perm], pair)


def test_dag_sinks_and_direction() -> None:
    ei = torch.tensor([[0, 1, 2], [1, 2, 3]])  # path 0 -> 1 -> 2 -> 3
    p = transition_matrix(ei, 4)
    assert p[3, 3] == 1 and p[0, 1] == 1  # the sink gets a self-loop
    node = directional_random_walk_pe(ei, 4, 2, direction="forward")
    torch.testing.assert_close(node, torch.tensor([[0.0, 0], [0, 0], [0, 0], [1, 1]]))
    pair = directional_random_walk_pe(ei, 4, 2, form="pairwise")
    assert pair[0, 2, 1] == 1 and pair[2, 0, 1] == 0  # two forward steps 0 -> 2
    assert pair[2, 0, 3] == 1  # two reverse steps 2 -> 0


def test_empty_multi_edges_and_errors() -> None:
    assert directional_random_walk_pe(torch.zeros(2, 0, dtype=torch.long), 0, 2).shape == (0, 4)
    iso = directional_random_walk_pe(torch.zeros(2, 0, dtype=torch.long), 3, 2)
    torch.testing.assert_close(iso, torch.ones(3, 4))  # isolated nodes: absorbing self-loops
    ei = torch.tensor([[0, 0, 0], [1, 1, 2]])
    p = transition_matrix(ei, 3)
    torch.testing.assert_close(p[0], torch.tensor([0, 2 / 3, 1 / 3], dtype=torch.float64))
    with pytest.raises(ValueError, match="'node', 'pairwise'"):
        directional_random_walk_pe(ei, 3, 2, form="dense")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'forward', 'reverse', 'both'"):
        directional_random_walk_pe(ei, 3, 2, direction="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ppr_alpha"):
        directional_random_walk_pe(ei, 3, 2, ppr_alpha=1.5)
    with pytest.raises(ValueError, match="walk_length"):
        directional_random_walk_pe(ei, 3, 0)
    with pytest.raises(TypeError, match="walk_length"):
        directional_random_walk_pe(ei, 3, 2.0)  # type: ignore[arg-type]
