"""``multipos demo`` hook for the documents part: a page, its word graph and ROPE codes."""

from __future__ import annotations

import json
import os
import pathlib

import torch

from multipos.documents.funsd import load_funsd
from multipos.documents.plot import reading_order_figure
from multipos.documents.reading_order import reading_order
from multipos.documents.rope import rope_codes
from multipos.documents.synthetic import synthetic_form
from multipos.documents.word_graph import word_graph
from multipos.plot import available, save


def _funsd_page(data: pathlib.Path) -> tuple[torch.Tensor, str] | None:
    """The first testing form of a local FUNSD copy, if there is one."""
    if not (data / "funsd" / "testing_data" / "annotations").is_dir():
        return None
    page = load_funsd(data / "funsd", "testing")[0]
    return page.box, f"FUNSD testing form {page.name}"


def run_demo(out: pathlib.Path, data: pathlib.Path | None = None) -> None:
    """Print the word graph, reading orders and code invariances of one page.

    The page is the first FUNSD testing form when ``data`` (default ``$MULTIPOS_DATA``, else
    ``../shared/data`` from the working directory) holds FUNSD, otherwise a synthetic form.
    Writes ``out / "documents" / "documents_demo.json"`` and, with matplotlib,
    ``out / "documents" / "reading_order.png"`` (:func:`reading_order_figure`).
    """
    if data is None:
        data = pathlib.Path(
            os.environ.get("MULTIPOS_DATA", pathlib.Path.cwd().parent / "shared" / "data")
        )
    found = _funsd_page(data)
    if found is None:
        form = synthetic_form(rows=6, columns=2, skew_degrees=1.5)
        boxes, source = form.boxes, "synthetic form (FUNSD not found)"
    else:
        boxes, source = found
    n = boxes.shape[0]
    edges = word_graph(boxes)
    knn = word_graph(boxes, "knn", k=8)
    rank = reading_order(boxes, "raster")
    codes = rope_codes(edges, rank)
    shifted = bool(torch.equal(rope_codes(edges, rank * 3 + 100), codes))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    new_rank = torch.empty_like(rank)
    new_rank[perm] = rank
    relabelled = bool(torch.equal(rope_codes(perm[edges], new_rank), codes))
    agree = {s: float((reading_order(boxes, s) == rank).float().mean()) for s in ("given", "xycut")}
    print(f"  {source}: {n} words")
    print(
        f"  beta-skeleton: {edges.shape[1] // 2} edges; kNN-8: {knn.shape[1] // 2} edges; "
        f"codes range {int(codes.min())}..{int(codes.max())}"
    )
    print(
        f"  codes unchanged when the order is shifted / rescaled: {shifted}; "
        f"when the words are relabelled: {relabelled}"
    )
    print(
        f"  words at the same place as in raster order: given {agree['given']:.0%}, "
        f"xycut {agree['xycut']:.0%}"
    )
    target = out / "documents"
    target.mkdir(parents=True, exist_ok=True)
    (target / "documents_demo.json").write_text(
        json.dumps(
            {
                "page": source,
                "words": n,
                "beta_skeleton_edges": edges.shape[1] // 2,
                "knn_edges": knn.shape[1] // 2,
                "codes_invariant_to_shift": shifted,
                "codes_invariant_to_relabelling": relabelled,
                "same_place_as_raster": agree,
            },
            indent=2,
        )
    )
    if available():
        fig = reading_order_figure(
            boxes, edges, codes, rank, title=f"ROPE codes on the word graph of a {source}"
        )
        picture = save(fig, target / "reading_order.png")
        print(f"  word graph coloured by ROPE code, reading order as a path: {picture}")
