r"""FUNSD forms as PyG ``Data``, with an optional EC-FUNSD reference reading order.

FUNSD: "FUNSD: A Dataset for Form Understanding in Noisy Scanned Documents" (Jaume, Ekenel,
Thiran, 2019, arXiv:1905.13538), non-commercial research and educational use only; the user
points :func:`load_funsd` at a local copy (nothing is downloaded or shipped). EC-FUNSD
reading-order relations: "Modeling Layout Reading Order as Ordering Relations for Visually-rich
Document Understanding" (Zhang et al., 2024, arXiv:2409.19672), ``ro_linkings`` = segment ->
next segment.

The FUNSD JSON word order is the annotation order (entity by entity), not a reading order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch_geometric.data import Data

from multipos.documents.boxes import box_centres
from multipos.documents.features import box_features, text_features
from multipos.documents.reading_order import rank_from_order
from multipos.graph.checks import check_choice

__all__ = ["FUNSD_LABELS", "FUNSD_SPLITS", "load_funsd", "reference_rank"]

FUNSD_LABELS: tuple[str, ...] = ("header", "question", "answer", "other")
FUNSD_SPLITS: tuple[str, ...] = ("training", "testing")


def _segment_order(segments: Sequence[dict[str, Any]], links: Sequence[Sequence[int]]) -> list[int]:
    """Segments in reading order: the ``links`` (a -> next b) topologically, ties by raster."""
    ids = [int(s["id"]) for s in segments]
    top_left = {int(s["id"]): (s["box"][1], s["box"][0]) for s in segments}
    nxt: dict[int, list[int]] = {i: [] for i in ids}
    indeg = dict.fromkeys(ids, 0)
    for a, b in links:
        if a in nxt and b in indeg and a != b:
            nxt[a].append(b)
            indeg[b] += 1
    order: list[int] = []
    ready = sorted((i for i in ids if indeg[i] == 0), key=top_left.__getitem__)
    while ready:
        u = ready.pop(0)
        order.append(u)
        for v in nxt[u]:
            indeg[v] -= 1
            if indeg[v] == 0:
                ready.append(v)
        ready.sort(key=top_left.__getitem__)
    seen = set(order)
    order += sorted((i for i in ids if i not in seen), key=top_left.__getitem__)  # cycles
    return order


def reference_rank(boxes: np.ndarray, ec_document: dict[str, Any]) -> torch.Tensor:
    """EC-FUNSD reference rank ``(N,)`` of FUNSD words with ``boxes`` ``(N, 4)``.

    Segments are ordered by the ``ro_linkings`` relations (topologically; ties and segments
    left unordered by raster position), words within a segment by their EC-FUNSD ids. A FUNSD
    word takes the place of the EC-FUNSD word with the same box, or of the nearest one by
    centre when the relabelling changed its box (about 2% of the words); words that land on
    the same place keep their FUNSD order.

    Raises:
        ValueError: If the EC-FUNSD document has no words.
    """
    segments = ec_document["document"]
    order = _segment_order(segments, ec_document.get("ro_linkings", []))
    seg_pos = {s: p for p, s in enumerate(order)}
    keys, ec_boxes = [], []
    for s in segments:
        for w in sorted(s["words"], key=lambda w: int(w["id"])):
            keys.append((seg_pos[int(s["id"])], int(w["id"])))
            ec_boxes.append(w["box"])
    if not keys:
        raise ValueError("the EC-FUNSD document has no words")
    ec = np.asarray(ec_boxes, dtype=np.float64)
    exact = {tuple(b): i for i, b in reversed(list(enumerate(ec.tolist())))}
    _, nearest = cKDTree(box_centres(ec)).query(box_centres(boxes))
    match = np.array(
        [exact.get(tuple(b), int(j)) for b, j in zip(boxes.tolist(), nearest, strict=True)]
    )
    key = np.asarray(keys)[match]  # (N, 2)
    return rank_from_order(np.lexsort((np.arange(len(boxes)), key[:, 1], key[:, 0])))


def load_funsd(
    root: str | Path,
    split: str = "training",
    *,
    reading_order_root: str | Path | None = None,
    text_dim: int = 256,
) -> list[Data]:
    r"""Read the FUNSD forms of one split as PyG ``Data`` objects, one per page.

    From "FUNSD: A Dataset for Form Understanding in Noisy Scanned Documents" (Jaume et al.,
    2019, arXiv:1905.13538). Each page carries, with ``N`` words and ``L`` entity links:

    ``x`` ``(N, text_dim + 6)`` float32 = :func:`text_features` || :func:`box_features`;
    ``box`` ``(N, 4)`` float32 page coordinates; ``y`` ``(N,)`` int64 label index into
    ``FUNSD_LABELS`` (header, question, answer, other); ``entity`` ``(N,)`` int64 the FUNSD
    entity id of each word; ``entity_links`` ``(L, 2)`` int64 linked entity ids;
    ``words`` (list of str); ``name`` (file stem); and, with ``reading_order_root``,
    ``reference_rank`` ``(N,)`` int64 from EC-FUNSD (:func:`reference_rank`). Words follow
    the JSON (annotation) order; there is no ``edge_index`` until a transform such as
    :class:`~multipos.documents.AddReadingOrderPE` adds one.

    Args:
        root: Folder holding ``training_data/annotations/*.json`` and ``testing_data/...``.
        split: ``"training"`` or ``"testing"``.
        reading_order_root: EC-FUNSD folder holding ``jsons/<name>.json``, or ``None``.
        text_dim: Hash buckets of the text features.

    Raises:
        ValueError: If ``split`` is unknown.
        FileNotFoundError: If the split's annotation folder (or an EC-FUNSD file) is missing
            or holds no JSON file.
    """
    check_choice("split", split, FUNSD_SPLITS)
    folder = Path(root) / f"{split}_data" / "annotations"
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no FUNSD annotations (*.json) in {folder}")
    label_of = {name: i for i, name in enumerate(FUNSD_LABELS)}
    pages = []
    for path in files:
        form = json.loads(path.read_text())["form"]
        words, boxes, labels, entity = [], [], [], []
        links: set[tuple[int, int]] = set()
        for ent in form:
            for w in ent["words"]:
                words.append(w["text"])
                boxes.append(w["box"])
                labels.append(label_of[ent["label"]])
                entity.append(int(ent["id"]))
            links.update((int(a), int(b)) for a, b in ent.get("linking", []))
        box = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        data = Data(
            x=torch.cat([text_features(words, text_dim), box_features(box)], dim=1),
            box=box,
            y=torch.tensor(labels, dtype=torch.int64),
            entity=torch.tensor(entity, dtype=torch.int64),
            entity_links=torch.tensor(sorted(links), dtype=torch.int64).reshape(-1, 2),
            words=words,
            name=path.stem,
        )
        if reading_order_root is not None:
            ec_path = Path(reading_order_root) / "jsons" / path.name
            if not ec_path.is_file():
                raise FileNotFoundError(f"no EC-FUNSD reading order for {path.stem}: {ec_path}")
            data.reference_rank = reference_rank(
                np.asarray(boxes, dtype=np.float64), json.loads(ec_path.read_text())
            )
        pages.append(data)
    return pages
