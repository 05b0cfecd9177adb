from __future__ import annotations

import pytest

pytest.importorskip("torch_geometric", reason="multipos.graph needs the [graph] extra")

import torch
from hypothesis import given
from torch_geometric.data import Data

from multipos.graph import (
    AddDirectionalRandomWalkPE,
    directional_random_walk_pe,
    transition_matrix,
)
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


def _reachable(ei: torch.Tensor, n: int) -> torch.Tensor:
    """(N, N) bool: v is reachable from u (u itself included), by repeated squaring."""
    r = torch.eye(n, dtype=torch.float64)
    r[ei[0], ei[1]] = 1.0
    for _ in range(n.bit_length()):
        r = (r @ r).clamp_max(1.0)
    return r > 0


def test_ppr_stores_exactly_the_reachable_pairs_on_a_dag() -> None:
    # A DAG: u -> v only for u < v, so half the pairs are unreachable; the inverse of the
    # PPR matrix leaves ~1e-16 there unless the structure is used.
    g = torch.Generator().manual_seed(0)
    n = 120
    adj = torch.triu(torch.rand(n, n, generator=g) < 0.05, 1)
    ei = adj.nonzero().t()
    pair = directional_random_walk_pe(ei, n, 2, ppr_alpha=0.15, form="pairwise")
    fwd_ppr, rev_ppr = pair[..., 2], pair[..., 5]
    reach = _reachable(ei, n)
    assert torch.equal(fwd_ppr != 0, reach)
    assert torch.equal(rev_ppr != 0, reach.T)
    t = AddDirectionalRandomWalkPE(2, ppr_alpha=0.15, form="pairwise")
    data = t(Data(edge_index=ei, num_nodes=n))
    stored = torch.zeros(n, n, dtype=torch.bool)
    stored[data.directional_walk_pair_index[0], data.directional_walk_pair_index[1]] = True
    assert torch.equal(stored, reach | reach.T)


def test_walk_features_store_exactly_the_pairs_joined_by_a_walk() -> None:
    ei = torch.tensor([[0, 1, 2, 4], [1, 2, 3, 0]])  # 4 -> 0 -> 1 -> 2 -> 3 (3 a sink)
    n = 5
    data = AddDirectionalRandomWalkPE(2, direction="forward", form="pairwise")(
        Data(edge_index=ei, num_nodes=n)
    )
    pairs = {tuple(p) for p in data.directional_walk_pair_index.t().tolist()}
    one = {(0, 1), (1, 2), (2, 3), (4, 0), (3, 3)}  # the sink's self-loop is a transition
    two = {(0, 2), (1, 3), (2, 3), (4, 1), (3, 3)}
    assert pairs == one | two


def test_large_graph_node_form_is_exact_and_budgeted() -> None:
    from multipos.graph.checks import graph_arrays
    from multipos.graph.random_walk import _adjacency, _stochastic
    from multipos.graph.return_probabilities import return_probabilities

    ei = random_graph(300, 0.02, 5, directed=True)
    p = _stochastic(_adjacency(graph_arrays(ei, 300, None)))
    dense = torch.from_numpy(p.toarray())
    expected = torch.stack(
        [torch.linalg.matrix_power(dense, t).diagonal() for t in range(1, 6)], dim=1
    )
    for budget in (1 << 30, 300 * 7 * 12 * 3):  # one block; blocks of three start nodes
        got = torch.from_numpy(return_probabilities(p, 5, memory_limit=budget))
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="memory_limit"):
        return_probabilities(p, 5, memory_limit=1000)
    with pytest.raises(ValueError, match="estimated at"):
        return_probabilities(p, 5, time_limit=1e-9)


def test_large_graph_options_are_checked() -> None:
    ei = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(TypeError, match="memory_limit"):
        directional_random_walk_pe(ei, 3, 2, memory_limit=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="time_limit"):
        directional_random_walk_pe(ei, 3, 2, time_limit=-1.0)
    with pytest.raises(ValueError, match="4096"):
        directional_random_walk_pe(ei, 5000, 2, form="pairwise")


_MEMORY_SCRIPT = """
import sys, time, tracemalloc
import numpy as np, torch
from multipos.graph import directional_random_walk_pe
n, deg, steps = 20_000, 5, 8
rng = np.random.default_rng(0)
ei = torch.from_numpy(np.stack([np.repeat(np.arange(n), deg), rng.integers(0, n, n * deg)]))
tracemalloc.start()  # numpy and scipy.sparse arrays are traced
before = tracemalloc.get_traced_memory()[0]
start = time.perf_counter()
out = directional_random_walk_pe(ei, n, steps, direction="forward", progress=False)
seconds = time.perf_counter() - start
extra = tracemalloc.get_traced_memory()[1] - before
tracemalloc.stop()
# exactness on a few nodes: propagate the unit vector itself, P^t e_u, densely
from multipos.graph import transition_matrix
import scipy.sparse as sp
a = sp.csr_matrix((np.ones(n * deg), (ei[0].numpy(), ei[1].numpy())), shape=(n, n))
deg_out = np.asarray(a.sum(1)).ravel()
p = sp.diags(1.0 / deg_out) @ a
err = 0.0
for u in (0, 17, 12345, n - 1):
    x = np.zeros(n); x[u] = 1.0
    for t in range(steps):
        x = p @ x
        err = max(err, abs(x[u] - float(out[u, t])))
print(extra, seconds, err)
"""


@pytest.mark.slow
def test_20k_nodes_walk_length_8_exact_under_1_gb() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True, check=True
    )
    extra_bytes, seconds, err = map(float, done.stdout.split())
    assert extra_bytes < 1e9, f"{extra_bytes / 1e9:.2f} GB extra in {seconds:.0f} s"
    assert err < 1e-6  # float32 output of exact float64 values
