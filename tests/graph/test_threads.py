"""The graph PEs' thread holds: one BLAS / torch thread inside, the caller's counts after."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from multipos.graph.threads import blas_single_threaded, single_threaded, torch_single_threaded


def _blas_threads() -> list[int]:
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


@pytest.mark.parametrize("outside", [1, 2])
def test_blas_held_at_one_and_restored(outside) -> None:
    with threadpool_limits(limits=outside, user_api="blas"):
        before = _blas_threads()
        assert before and all(n == outside for n in before)
        with blas_single_threaded():
            assert all(n == 1 for n in _blas_threads())
        assert _blas_threads() == before


def test_restored_after_an_error() -> None:
    with threadpool_limits(limits=2, user_api="blas"):
        before, torch_before = _blas_threads(), torch.get_num_threads()
        with pytest.raises(RuntimeError), single_threaded():
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
        assert _blas_threads() == before
        assert torch.get_num_threads() == torch_before


@pytest.mark.parametrize("outside", [1, 2])
def test_torch_held_at_one_and_restored(outside) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(outside)
    try:
        with torch_single_threaded() as held:
            assert held == outside and torch.get_num_threads() == 1
        assert torch.get_num_threads() == outside
    finally:
        torch.set_num_threads(previous)
