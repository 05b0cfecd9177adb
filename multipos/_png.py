"""A minimal PNG writer (8-bit RGB), so the demo needs no imaging library."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import torch
from torch import Tensor

# Anchors of a perceptually ordered colour map (dark blue -> teal -> yellow), RGB in [0, 1].
_ANCHORS = torch.tensor(
    [
        [0.267, 0.005, 0.329],
        [0.230, 0.322, 0.546],
        [0.128, 0.567, 0.551],
        [0.369, 0.789, 0.383],
        [0.993, 0.906, 0.144],
    ]
)


def colorize(values: Tensor) -> Tensor:
    """Map a ``(H, W)`` tensor to ``(H, W, 3)`` uint8 colours, min -> dark, max -> yellow."""
    v = values.detach().to(torch.float32)
    lo, hi = v.min(), v.max()
    t = (v - lo) / (hi - lo) if hi > lo else torch.zeros_like(v)
    x = t * (len(_ANCHORS) - 1)
    i = x.floor().clamp(max=len(_ANCHORS) - 2).long()
    frac = (x - i).unsqueeze(-1)
    rgb = _ANCHORS[i] * (1 - frac) + _ANCHORS[i + 1] * frac
    return (rgb * 255).round().to(torch.uint8)


def write_png(path: str | Path, rgb: Tensor, scale: int = 1) -> Path:
    """Write an ``(H, W, 3)`` uint8 image, each pixel repeated ``scale`` times per axis.

    Raises:
        ValueError: If ``rgb`` is not ``(H, W, 3)`` uint8 or ``scale`` < 1.
    """
    if rgb.dim() != 3 or rgb.shape[-1] != 3 or rgb.dtype != torch.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {tuple(rgb.shape)} {rgb.dtype}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    img = rgb.repeat_interleave(scale, 0).repeat_interleave(scale, 1).contiguous()
    height, width, _ = img.shape
    rows = b"".join(b"\x00" + bytes(img[r].flatten().tolist()) for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    payload = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(payload)
    return out
