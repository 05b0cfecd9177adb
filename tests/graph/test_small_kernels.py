"""The compiled per-graph path (multipos.graph.small_kernels) gives the numpy path's bits,
signed zeros included, on every kind of small unweighted graph, and declines what the numpy
path declines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from multipos.graph import AddLaplacianPE, AddMagneticLaplacianPE, small_kernels
from multipos.graph.small import unweighted_laplacian_pe, unweighted_magnetic_pe
from multipos.graph.threads import torch_single_threaded

pytestmark = pytest.mark.skipif(
    not small_kernels.available(), reason="the C module is not built (no compiler at install)"
)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t


def _same(got: dict[str, torch.Tensor], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name, arr in want.items():
        ref = torch.from_numpy(np.ascontiguousarray(arr))
        assert got[name].dtype == ref.dtype and got[name].shape == ref.shape, name
        assert torch.equal(_bits(got[name]), _bits(ref)), name


def _graphs() -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(120):
        n = int(rng.integers(1, 40))
        edges = rng.integers(0, n, (2, int(rng.integers(0, 3 * n + 1))))  # loops, repeats
        out.append((edges.astype(np.int64), n))
    ring = np.stack([np.arange(9), (np.arange(9) + 1) % 9])  # odd cycle: repeated eigenvalues
    out += [(ring, 9), (np.concatenate([ring, ring[::-1]], 1), 9), (ring, 12)]  # + isolated
    out += [(np.zeros((2, 0), dtype=np.int64), 5), (np.array([[0], [1]]), 96)]
    return out


@pytest.mark.parametrize("k", [1, 4, 8])
def test_laplacian_same_bits_as_the_numpy_path(k) -> None:
    taken = 0
    for edges, n in _graphs():
        got = small_kernels.laplacian_pe_tensors(edges, n, k)
        ref = unweighted_laplacian_pe(edges, n, k)
        assert (got is None) == (ref is None), (n, edges.shape)
        if ref is None:
            continue
        taken += 1
        vectors, values, mask = ref
        rows = np.ones((n, 1))
        _same(
            got,
            {
                "pe": vectors.astype(np.float32),
                "eigenvalues": (rows * values).astype(np.float32),
                "mask": np.repeat(mask[None], n, 0),
            },
        )
    assert taken > 40


@pytest.mark.parametrize(("q", "relative"), [(0.25, True), (0.1, False), (0.5, False)])
@pytest.mark.parametrize("k", [2, 8])
def test_magnetic_same_bits_as_the_numpy_path(q, relative, k) -> None:
    for edges, n in _graphs():
        got = small_kernels.magnetic_pe_tensors(edges, n, k, q, relative)
        ref = unweighted_magnetic_pe(edges, n, k, q, relative)
        assert (got is None) == (ref is None)
        if ref is None:
            continue
        vectors, values, mask = ref
        _same(
            got,
            {
                "pe_real": vectors.real.astype(np.float32),
                "pe_imag": vectors.imag.astype(np.float32),
                "eigenvalues": np.repeat(values.astype(np.float32)[None], n, 0),
                "mask": np.repeat(mask[None], n, 0),
            },
        )


def test_declines_what_the_numpy_path_declines() -> None:
    ring = np.stack([np.arange(5), (np.arange(5) + 1) % 5]).astype(np.int64)
    assert small_kernels.laplacian_pe_tensors(ring, 97, 4) is None  # above 96 nodes
    assert small_kernels.laplacian_pe_tensors(ring, 0, 4) is None
    assert small_kernels.laplacian_pe_tensors(ring.astype(np.int32), 5, 4) is None
    assert small_kernels.magnetic_pe_tensors(ring, 4, 4, 0.25, True) is None  # id 4 of 4
    negative = ring.copy()
    negative[0, 0] = -1
    assert small_kernels.magnetic_pe_tensors(negative, 5, 4, 0.25, True) is None
    doubled = np.concatenate([ring, ring], 1)  # a repeated edge: the weighted path decides
    assert small_kernels.laplacian_pe_tensors(doubled, 5, 4) is None
    assert small_kernels.magnetic_pe_tensors(doubled, 5, 4, 0.25, True) is not None
    # a non-contiguous edge_index is read as its values
    wide = np.zeros((2, 10), dtype=np.int64)
    wide[:, ::2] = ring
    got = small_kernels.laplacian_pe_tensors(wide[:, ::2], 5, 4)
    _same(got, dict(small_kernels.laplacian_pe_tensors(ring, 5, 4).items()))


@pytest.mark.parametrize(
    "transform", [AddLaplacianPE(k=4), AddMagneticLaplacianPE(k=4)], ids=["laplacian", "magnetic"]
)
def test_transform_same_attributes_with_and_without_the_module(monkeypatch, transform) -> None:
    rng = np.random.default_rng(1)
    edges = torch.from_numpy(rng.integers(0, 20, (2, 50)))
    data = Data(edge_index=edges, num_nodes=20)
    calls = []
    real = small_kernels._graph

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(small_kernels, "_graph", spy)
    with torch_single_threaded():  # the per-graph fast path runs on one torch thread
        with_module = transform(data)
        assert calls
        monkeypatch.setattr(small_kernels, "_ENABLED", False)
        without = transform(data)
    assert with_module.keys() == without.keys()
    exact = isinstance(transform, AddLaplacianPE)  # the magnetic PE: another eigensolver
    for key in without.keys():  # noqa: SIM118 (Data.keys is a method)
        a, b = with_module[key], without[key]
        if not isinstance(a, torch.Tensor):
            assert a == b, key
        elif exact or a.dtype == torch.bool:
            assert torch.equal(_bits(a), _bits(b)), key
        else:  # LAPACK's ?heevd without the module; the phase rule makes them comparable
            torch.testing.assert_close(a, b, atol=2e-6, rtol=0, msg=key)
