# ruff: noqa: E402
"""Graph PE speed and accuracy against PyG's ``AddLaplacianEigenvectorPE(k=8)``.

Prints one JSON object per line: ``bench, case, metric, ours, baseline, ratio`` (ratio =
ours / baseline; for times < 1 means multipos is faster) plus details. Runs alternate
between the candidates inside one process; figures are medians (5 repetitions; 2 for the
50,000-node Laplacian and 1 for the 50,000-node magnetic PE, stated in ``repeats``).

Cases: 2,000 Erdos-Renyi graphs with 20-40 nodes (average degree 4); 199 kNN-6 point-cloud
graphs with 100-400 nodes; one 50,000-node Erdos-Renyi graph (average degree 10). The
magnetic PE runs on the same graphs with every edge given one random orientation.
``*_per_graph`` rows call the transform once per graph inside ``T.Compose``, as a PyG
dataset's ``pre_transform`` does, against PyG's transform called the same way on the same
graphs (the magnetic PE and the random walk read the oriented copies; PyG's Laplacian PE, the
baseline of every row, reads the undirected graphs). Every contender runs once as a warm-up
before the timed repetitions. With the compiled module, one more small-graph row times the
complex eigenproblem alone (the compiled solver, K = 8 eigenvectors, against
``numpy.linalg.eigh``, LAPACK's ``?heevd``, on the same magnetic Laplacians). The last row
times the exact node-form random walk on a 100,000-node graph (out-degree 5) in a fresh
process, with the peak of its traced (numpy / scipy) allocations from a second, traced run
and the process's peak RSS (no baseline: materialising ``P^t`` there needs gigabytes).
``--processes N`` runs everything in N fresh processes one after another and prints the median
of each row, with every process's ratio in ``ratio_runs``.
"""

from __future__ import annotations

import os

# One BLAS thread per LAPACK call for both sides: on a shared machine, idle OpenMP/OpenBLAS
# threads spin and make small LAPACK calls up to 1000x slower, which would flatter or punish
# either side at random. torch runs one intra-op thread too (--threads 1, the default), so
# both sides compute on one core; with --threads T multipos's apply_many spreads its graphs
# over T Python threads, while PyG's transform still works one graph at a time.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json
import statistics
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Data
from torch_geometric.utils import get_laplacian, to_undirected

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, emit_row, median_of_processes, rerun_command

from multipos.graph import (
    AddDirectionalRandomWalkPE,
    AddLaplacianPE,
    AddMagneticLaplacianPE,
    batched_laplacian_pe,
    magnetic_laplacian,
    small_kernels,
)

warnings.filterwarnings("ignore")
K = 8


def emit(**row: Any) -> None:
    emit_row(row)


def orient(edge_index: torch.Tensor, seed: int) -> torch.Tensor:
    """Keep each undirected edge once, in a random direction."""
    u, v = edge_index
    one = edge_index[:, u < v]
    flip = torch.rand(one.shape[1], generator=torch.Generator().manual_seed(seed)) < 0.5
    return torch.where(flip, one.flip(0), one)


def small_graphs(count: int, seed: int = 0) -> list[Data]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(20, 41))
        adj = np.triu(rng.random((n, n)) < 4.0 / (n - 1), 1)
        ei = torch.from_numpy(np.stack(np.nonzero(adj | adj.T))).long()
        out.append(Data(edge_index=ei, num_nodes=n))
    return out


def knn_graphs(count: int, seed: int = 1) -> list[Data]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        n = int(rng.integers(100, 401))
        pts = torch.from_numpy(rng.random((n, 2)))
        d = torch.cdist(pts, pts)
        d.fill_diagonal_(float("inf"))
        nbr = d.topk(6, largest=False).indices  # (n, 6)
        ei = torch.stack([torch.arange(n).repeat_interleave(6), nbr.reshape(-1)])
        out.append(Data(edge_index=to_undirected(ei, num_nodes=n), num_nodes=n))
    return out


def residual(edge_index: torch.Tensor, n: int, vecs: torch.Tensor) -> float:
    """max_j ||L v_j - (v_j^T L v_j) v_j|| with PyG's symmetric normalised Laplacian."""
    ei, w = get_laplacian(edge_index, normalization="sym", num_nodes=n)
    lap = sp.csr_matrix((w.double().numpy(), (ei[0].numpy(), ei[1].numpy())), shape=(n, n))
    v = vecs.double().numpy()
    v = v / np.maximum(np.linalg.norm(v, axis=0), 1e-300)
    lv = lap @ v
    lam = (v * lv).sum(0)
    return float(np.linalg.norm(lv - v * lam, axis=0).max())


def ratio_rows(
    case: str, times: dict[str, list[float]], pairs: list[tuple[str, str]], **extra: Any
):
    for ours, base in pairs:
        o, b = statistics.median(times[ours]), statistics.median(times[base])
        emit(
            bench="graph_pe",
            case=case,
            metric=f"time_s[{ours}]",
            ours=round(o, 4),
            baseline=round(b, 4),
            ratio=round(o / b, 3),
            baseline_name=base,
            repeats=len(times[ours]),
            spread_ours=[round(min(times[ours]), 4), round(max(times[ours]), 4)],
            spread_baseline=[round(min(times[base]), 4), round(max(times[base]), 4)],
            **extra,
        )


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--skip-large", action="store_true", help="only the 20-40 and 100-400-node cases"
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="median of this many fresh processes"
    )
    args = parser.parse_args()
    if args.processes > 1:
        median_of_processes(rerun_command(__file__, sys.argv[1:]), args.processes)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pyg = T.AddLaplacianEigenvectorPE(k=K, is_undirected=True)
    lap = AddLaplacianPE(k=K)
    mag = AddMagneticLaplacianPE(k=K)
    emit(
        bench="graph_pe",
        case="setup",
        metric="threads",
        ours=torch.get_num_threads(),
        baseline=1,
        ratio=float(torch.get_num_threads()),
        note="torch intra-op threads (both sides); BLAS single-threaded for both",
    )

    small = small_graphs(2000)
    small_dir = [
        Data(edge_index=orient(d.edge_index, i), num_nodes=d.num_nodes) for i, d in enumerate(small)
    ]
    pyg_pre = T.Compose([pyg])  # what a dataset's pre_transform runs, one graph per call
    lap_pre, mag_pre = T.Compose([lap]), T.Compose([mag])
    walk_pre = T.Compose([AddDirectionalRandomWalkPE(3)])
    fns = {
        "pyg": lambda: [pyg_pre(d) for d in small],
        "transform_per_graph": lambda: [lap_pre(d) for d in small],
        "magnetic_per_graph": lambda: [mag_pre(d) for d in small_dir],
        "random_walk_per_graph": lambda: [walk_pre(d) for d in small_dir],
        "transform_apply_many": lambda: lap.apply_many(small),
        "batched_function": lambda: batched_laplacian_pe(small, K),
        "magnetic_apply_many": lambda: mag.apply_many(small_dir),
    }
    times = alternate(fns, 5, warmup=1)
    ratio_rows(
        "2000 graphs, 20-40 nodes",
        times,
        [
            ("transform_per_graph", "pyg"),
            ("magnetic_per_graph", "pyg"),
            ("random_walk_per_graph", "pyg"),
            ("transform_apply_many", "pyg"),
            ("batched_function", "pyg"),
            ("magnetic_apply_many", "pyg"),
        ],
        target="ratio <= 0.5 for *_per_graph, <= 0.2 for transform_apply_many",
    )

    if small_kernels.available():
        # The complex eigensolver alone on the per-graph path's matrices: the compiled solver
        # (eigenvalues and K eigenvectors) against LAPACK's ?heevd (all pairs).
        mats = [magnetic_laplacian(d.edge_index, d.num_nodes).numpy() for d in small_dir]
        fns = {
            "compiled_solver": lambda: [small_kernels.hermitian_eigh(m, K) for m in mats],
            "lapack_heevd": lambda: [np.linalg.eigh(m) for m in mats],
        }
        times = alternate(fns, 5, warmup=1)
        ratio_rows(
            "2000 graphs, 20-40 nodes, magnetic Laplacians",
            times,
            [("compiled_solver", "lapack_heevd")],
            note="complex eigenproblem alone: K=8 eigenvectors against numpy.linalg.eigh",
        )

    medium = knn_graphs(199)
    medium_dir = [
        Data(edge_index=orient(d.edge_index, i), num_nodes=d.num_nodes)
        for i, d in enumerate(medium)
    ]
    fns = {
        "pyg": lambda: [pyg_pre(d) for d in medium],
        "transform_apply_many": lambda: lap.apply_many(medium),
        "transform_per_graph": lambda: [lap_pre(d) for d in medium],
        "magnetic_apply_many": lambda: mag.apply_many(medium_dir),
        "magnetic_per_graph": lambda: [mag_pre(d) for d in medium_dir],
        "random_walk_per_graph": lambda: [walk_pre(d) for d in medium_dir],
    }
    times = alternate(fns, 5, warmup=1)
    ratio_rows(
        "199 kNN-6 graphs, 100-400 nodes",
        times,
        [
            ("transform_apply_many", "pyg"),
            ("transform_per_graph", "pyg"),
            ("magnetic_apply_many", "pyg"),
            ("magnetic_per_graph", "pyg"),
            ("random_walk_per_graph", "pyg"),
        ],
        target="ratio <= 1 for *_per_graph and magnetic_apply_many",
    )

    if args.skip_large:
        return
    n = 50_000
    rng = np.random.default_rng(0)
    directed = torch.from_numpy(np.stack([rng.integers(0, n, 5 * n), rng.integers(0, n, 5 * n)]))
    directed = directed[:, directed[0] != directed[1]]
    big = Data(edge_index=to_undirected(directed, num_nodes=n), num_nodes=n)
    big_dir = Data(edge_index=directed, num_nodes=n)
    lap_big = AddLaplacianPE(k=K, tol=1e-6)  # solver="auto" -> ARPACK above 2,000 nodes
    outs: dict[str, list[torch.Tensor]] = {"ours": [], "pyg": []}
    fns = {
        "pyg": lambda: outs["pyg"].append(pyg(big).laplacian_eigenvector_pe),
        "ours": lambda: outs["ours"].append(lap_big(big).laplacian_pe),
    }
    times = alternate(fns, 2)
    res_ours = max(residual(big.edge_index, n, o) for o in outs["ours"])
    res_pyg = max(residual(big.edge_index, n, o) for o in outs["pyg"])
    diff_ours = float((outs["ours"][0] - outs["ours"][-1]).abs().max())
    diff_pyg = float((outs["pyg"][0] - outs["pyg"][-1]).abs().max())
    ratio_rows(
        "1 graph, 50,000 nodes (ER, avg degree 10)",
        times,
        [("ours", "pyg")],
        solver="arpack (auto), tol=1e-6, float64",
        baseline_solver="PyG: ARPACK eigsh float32, random v0",
    )
    emit(
        bench="graph_pe",
        case="1 graph, 50,000 nodes (ER, avg degree 10)",
        metric="max_residual |Lv - lambda v|",
        ours=res_ours,
        baseline=res_pyg,
        ratio=round(res_ours / res_pyg, 3),
    )
    emit(
        bench="graph_pe",
        case="1 graph, 50,000 nodes (ER, avg degree 10)",
        metric="max |PE(run 1) - PE(run 2)| (determinism)",
        ours=diff_ours,
        baseline=diff_pyg,
        ratio=round(diff_ours / diff_pyg, 3) if diff_pyg else None,
    )

    mag_big = AddMagneticLaplacianPE(k=K, tol=1e-6)
    fns = {
        "pyg": lambda: pyg(big),
        "magnetic": lambda: mag_big(big_dir),
    }
    times = alternate(fns, 1)
    ratio_rows(
        "1 graph, 50,000 nodes, magnetic PE (edges oriented)",
        times,
        [("magnetic", "pyg")],
        solver="arpack (auto), complex128, tol=1e-6",
    )

    large_walk()


_WALK_SCRIPT = """
import json, resource, time, tracemalloc
import numpy as np, torch
from multipos.graph import directional_random_walk_pe
n, deg, steps = {n}, 5, {steps}
rng = np.random.default_rng(0)
ei = torch.from_numpy(np.stack([np.repeat(np.arange(n), deg), rng.integers(0, n, n * deg)]))
start = time.perf_counter()
directional_random_walk_pe(ei, n, steps, direction="forward", progress=False)
seconds = time.perf_counter() - start
tracemalloc.start()  # a second run, traced: numpy and scipy.sparse arrays are counted
before = tracemalloc.get_traced_memory()[0]
directional_random_walk_pe(ei, n, steps, direction="forward", progress=False)
extra = tracemalloc.get_traced_memory()[1] - before
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"seconds": seconds, "extra_bytes": extra, "peak_rss": rss}}))
"""


def large_walk(n: int = 100_000, steps: int = 6) -> None:
    """Exact return probabilities on a large sparse graph, in a fresh process."""
    script = _WALK_SCRIPT.format(n=n, steps=steps)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if done.returncode:
        emit(
            bench="graph_pe",
            case="random walk, node form",
            metric="error",
            ours=None,
            baseline=None,
            ratio=None,
            error=done.stderr.strip().splitlines()[-1],
        )
        return
    result = json.loads(done.stdout)
    emit(
        bench="graph_pe",
        case=f"1 graph, {n:,} nodes, out-degree 5, directional random walk node form",
        metric=f"time_s[exact return probabilities, walk_length={steps}]",
        ours=round(result["seconds"], 2),
        baseline=None,
        ratio=None,
        peak_extra_memory_gb=round(result["extra_bytes"] / 1e9, 3),
        process_peak_rss_gb=round(result["peak_rss"] / 1e9, 3),
        memory_limit_gb=round((1 << 30) / 1e9, 3),
        repeats=1,
    )


if __name__ == "__main__":
    main()
