"""Input checks of the CLIP upgrade command, run before any training starts.

Every check raises ``ValueError`` (or ``FileNotFoundError``) that names the file, the row and
what to change, so a run never fails after hours of distillation on a bad row of the
fine-tuning data.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from torch import Tensor

__all__ = [
    "check_captions",
    "check_images",
    "check_resume_settings",
    "prepare_output",
]


def check_captions(
    captions: Sequence[str],
    tokenizer: Callable[..., Tensor],
    *,
    source: str,
    truncate: bool,
) -> int:
    """Refuse empty captions, and captions longer than the tokenizer's context unless
    ``truncate``. Returns how many captions are cut.

    Raises:
        ValueError: Naming the first offending row (1-based, header excluded) of ``source``.
    """
    for row, caption in enumerate(captions, start=1):
        if not caption.strip():
            raise ValueError(f"{source}: caption of row {row} is empty")
    length = int(getattr(tokenizer, "context_length", 0) or 0)
    if not length:
        return 0
    inner = getattr(tokenizer, "encode", None)
    cut = []
    for row, caption in enumerate(captions, start=1):
        count = len(inner(caption)) + 2 if inner is not None else 0
        if count > length:
            cut.append((row, count))
    if cut and not truncate:
        row, count = cut[0]
        raise ValueError(
            f"{source}: {len(cut)} caption(s) are longer than the context of {length} tokens "
            f"(first: row {row}, {count} tokens) and would be cut; pass --truncate-captions to "
            "accept that, or raise --context-length"
        )
    return len(cut)


def check_images(pairs: Sequence[tuple[Path, str]], *, source: str) -> None:
    """Every image exists and its header decodes (``PIL.Image.verify``).

    Raises:
        FileNotFoundError: For a missing image, naming its row.
        ValueError: For a file PIL cannot read, naming its row.
    """
    for row, (path, _) in enumerate(pairs, start=1):
        if not path.is_file():
            raise FileNotFoundError(f"{source}: image of row {row} not found: {path}")
        try:
            with Image.open(path) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise ValueError(
                f"{source}: image of row {row} cannot be read ({path}): {err}"
            ) from err


RUN_FILE = "run.json"
#: Options that may change when a run is resumed (they do not change what is trained).
FREE_ON_RESUME = ("resume", "overwrite", "no_progress", "workers", "keep_checkpoints")


def prepare_output(out: Path, *, overwrite: bool, resume: bool) -> None:
    """Make sure ``out`` can receive the results before anything is trained.

    Raises:
        ValueError: If ``out`` is a file, or an existing non-empty folder without
            ``overwrite``/``resume``.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not resume:
        if not overwrite:
            raise ValueError(
                f"--out {out} already exists and is not empty; pass --overwrite to replace it "
                "or --resume to continue the run in it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def check_resume_settings(out: Path, settings: Mapping[str, Any], *, resume: bool) -> None:
    """Store the run's settings in ``out/run.json``; on ``resume``, refuse changed ones.

    Raises:
        ValueError: Naming every setting that differs from the stored run.
    """
    path = out / RUN_FILE
    current = {k: v for k, v in settings.items() if k not in FREE_ON_RESUME}
    if resume and path.is_file():
        stored = json.loads(path.read_text())
        changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        if changed:
            details = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in changed)
            raise ValueError(
                f"--resume: the run in {out} used other settings ({details}); resume with the "
                "same settings, or start a new run in another folder"
            )
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
