from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("torch_geometric", reason="multipos.documents needs the [documents] extra")

from multipos.documents import (
    FUNSD_LABELS,
    box_features,
    load_funsd,
    reading_order,
    text_features,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MULTIPOS_DATA", ROOT.parent / "shared" / "data"))


def _write_form(root: Path, split: str, name: str) -> None:
    """A tiny FUNSD-format form, annotated out of reading order, and its EC-FUNSD file."""
    form = [
        {"id": 0, "label": "answer", "linking": [[1, 0]],
         "words": [{"text": "Smith", "box": [60, 10, 100, 20]}]},
        {"id": 1, "label": "question", "linking": [[1, 0]],
         "words": [{"text": "Name", "box": [0, 10, 40, 20]},
                   {"text": ":", "box": [41, 10, 45, 20]}]},
        {"id": 2, "label": "header", "linking": [],
         "words": [{"text": "FORM", "box": [20, 0, 60, 8]}]},
        {"id": 3, "label": "other", "linking": [], "words": []},
    ]  # fmt: skip
    folder = root / "funsd" / f"{split}_data" / "annotations"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"form": form}))
    ec = {
        "document": [
            {"id": 0, "box": [0, 10, 45, 20], "words": [
                {"id": 1, "box": [0, 10, 40, 20]}, {"id": 2, "box": [41, 10, 45, 20]}]},
            {"id": 1, "box": [60, 10, 100, 20], "words": [{"id": 3, "box": [61, 10, 100, 20]}]},
            {"id": 2, "box": [20, 0, 60, 8], "words": [{"id": 0, "box": [20, 0, 60, 8]}]},
        ],
        "ro_linkings": [[2, 0], [0, 1]],
    }  # fmt: skip
    (root / "ec").mkdir(exist_ok=True)
    (root / "ec" / "jsons").mkdir(exist_ok=True)
    (root / "ec" / "jsons" / f"{name}.json").write_text(json.dumps(ec))


def test_load_a_synthetic_funsd_copy(tmp_path: Path) -> None:
    _write_form(tmp_path, "testing", "b")
    _write_form(tmp_path, "testing", "a")
    pages = load_funsd(tmp_path / "funsd", "testing", reading_order_root=tmp_path / "ec")
    assert [p.name for p in pages] == ["a", "b"]
    page = pages[0]
    assert page.words == ["Smith", "Name", ":", "FORM"]
    assert [FUNSD_LABELS[i] for i in page.y] == ["answer", "question", "question", "header"]
    assert page.entity.tolist() == [0, 1, 1, 2]
    assert page.entity_links.tolist() == [[1, 0]]
    assert page.x.shape == (4, 256 + 6) and page.box.dtype == torch.float32
    # EC-FUNSD order: header, question, answer (the answer's box moved by one unit)
    assert page.reference_rank.tolist() == [3, 1, 2, 0]
    assert page.reference_rank.tolist() == reading_order(page.box, "raster").tolist()
    assert "reference_rank" not in load_funsd(tmp_path / "funsd", "testing")[0]


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split must be one of 'training', 'testing'"):
        load_funsd(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="training_data"):
        load_funsd(tmp_path / "nowhere")
    _write_form(tmp_path, "training", "a")
    with pytest.raises(FileNotFoundError, match="no EC-FUNSD reading order for a"):
        load_funsd(tmp_path / "funsd", reading_order_root=tmp_path / "missing")


def test_text_features() -> None:
    f = text_features(["Date", "date", "Total", ""], dim=64)
    assert f.shape == (4, 64)
    torch.testing.assert_close(f.norm(dim=1), torch.ones(4))
    assert torch.equal(f[0], f[1])  # lower-cased
    assert (f[0] - f[2]).abs().max() > 0.1
    # stable across calls (CRC-32, not the salted built-in hash)
    assert torch.equal(text_features(["Date"], dim=64)[0], f[0])
    with pytest.raises(TypeError, match="sequence of strings"):
        text_features("date")
    with pytest.raises(ValueError, match="dim must be a positive int"):
        text_features(["a"], dim=0)


def test_box_features() -> None:
    f = box_features(torch.tensor([[0.0, 0, 50, 10], [100, 80, 200, 100]]))
    torch.testing.assert_close(f[1], torch.tensor([0.5, 0.8, 1.0, 1.0, 0.5, 0.2]))
    with pytest.raises(ValueError, match="y0 <= y1"):
        box_features(torch.tensor([[0.0, 5, 1, 1]]))


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "funsd").is_dir(), reason="FUNSD is not in ../shared/data")
def test_real_funsd_testing_split() -> None:
    pages = load_funsd(DATA / "funsd", "testing", reading_order_root=DATA / "ec-funsd")
    assert len(pages) == 50 and sum(p.num_nodes for p in pages) == 8973
    # the JSON order is not a reading order; raster agrees with EC-FUNSD far better
    given = sum(int((p.reference_rank == torch.arange(p.num_nodes)).sum()) for p in pages)
    raster = sum(int((p.reference_rank == reading_order(p.box)).sum()) for p in pages)
    assert raster > 2 * given
