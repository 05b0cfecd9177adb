r"""Training and evaluation data for the CLIP text-length upgrade: captions and image pairs.

Readers accept the formats open_clip_train uses (a caption ``.txt`` file, an open_clip-style
CSV with ``filepath``/``title`` columns, or a folder of ``x.png`` + ``x.txt``); the datasets
turn them into token ids and image tensors for :mod:`multipos.clip.stages`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

__all__ = [
    "IMAGE_SUFFIXES",
    "CaptionDataset",
    "PairDataset",
    "read_captions",
    "read_pairs",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def read_captions(
    path: str | Path, *, caption_key: str = "title", separator: str = "\t"
) -> list[str]:
    """Captions from a ``.txt`` file (one per non-empty line) or an open_clip-style CSV.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the CSV lacks ``caption_key`` or no caption is found.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file not found: {path}")
    if path.suffix.lower() in (".csv", ".tsv"):
        captions = [caption for _, caption in _read_csv(path, None, caption_key, separator)]
    else:
        captions = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not captions:
        raise ValueError(f"no captions in {path}")
    return captions


def _read_csv(
    path: Path, img_key: str | None, caption_key: str, separator: str
) -> list[tuple[str, str]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f, delimiter=separator)
        columns = reader.fieldnames or []
        needed = [k for k in (img_key, caption_key) if k is not None]
        missing = [k for k in needed if k not in columns]
        if missing:
            raise ValueError(
                f"{path} has columns {columns}; missing {missing} (separator {separator!r})"
            )
        return [(row[img_key] if img_key else "", row[caption_key]) for row in reader]


def read_pairs(
    source: str | Path,
    *,
    img_key: str = "filepath",
    caption_key: str = "title",
    separator: str = "\t",
) -> list[tuple[Path, str]]:
    """(image path, caption) pairs from an open_clip-style CSV or a folder.

    A CSV (tab-separated by default) has a header with ``img_key`` and ``caption_key`` columns,
    as open_clip_train's ``--dataset-type csv``; relative image paths are taken from the CSV's
    folder. A folder holds images with a caption file of the same stem (``a.png`` + ``a.txt``).

    Raises:
        FileNotFoundError: If ``source`` does not exist.
        ValueError: If a column is missing or no pair is found.
    """
    source = Path(source)
    if source.is_dir():
        pairs = []
        for image in sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            text = image.with_suffix(".txt")
            if text.is_file():
                pairs.append((image, text.read_text().strip()))
    elif source.is_file():
        rows = _read_csv(source, img_key, caption_key, separator)
        pairs = [
            (p if p.is_absolute() else source.parent / p, caption)
            for p, caption in ((Path(f), c) for f, c in rows)
        ]
    else:
        raise FileNotFoundError(f"pairs source not found: {source}")
    if not pairs:
        raise ValueError(f"no (image, caption) pairs in {source}")
    return pairs


class CaptionDataset(torch.utils.data.Dataset[Tensor]):
    """Token ids ``(L,)`` of each caption."""

    def __init__(self, captions: Sequence[str], tokenizer: Callable[..., Tensor]) -> None:
        self.captions = list(captions)
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> Tensor:
        return self.tokenizer([self.captions[index]])[0]


class PairDataset(torch.utils.data.Dataset[tuple[Tensor, Tensor]]):
    """``(image (3, H, W), token ids (L,))`` per pair."""

    def __init__(
        self,
        pairs: Sequence[tuple[Path, str]],
        preprocess: Callable[[Image.Image], Tensor],
        tokenizer: Callable[..., Tensor],
    ) -> None:
        self.pairs = list(pairs)
        self.preprocess = preprocess
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        path, caption = self.pairs[index]
        with Image.open(path) as image:
            pixels = self.preprocess(image.convert("RGB"))
        return pixels, self.tokenizer([caption])[0]
