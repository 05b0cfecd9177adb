r"""Qwen2-VL M-RoPE position ids (t, h, w), with V2PE's fractional visual increments.

From "Qwen2-VL: Enhancing Vision-Language Model's Perception of the World at Any Resolution"
(Wang et al., 2024, arXiv:2409.12191), M-RoPE: text tokens carry the same position on the
three axes; the visual tokens of an image or video carry their (frame, row, column) index on
the (t, h, w) axes, offset so that the first one sits right after the preceding text; the next
text starts one past the largest visual position. V2PE (Ge et al., 2024, arXiv:2412.09616)
scales each visual axis increment by :math:`\delta`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from multipos.llm.packing import check_token_inputs
from multipos.llm.v2pe import Delta, draw_deltas, image_slots

__all__ = ["MRopePositions", "mrope_positions"]

TEXT, IMAGE, VIDEO = 0, 1, 2


class MRopePositions(NamedTuple):
    """Result of :func:`mrope_positions`.

    Attributes:
        position_ids: ``(3, B, L)`` float32 (t, h, w) positions; padding holds 0.
        rope_deltas: ``(B, 1)`` long: the next text position minus the number of real tokens
            of the row's last sample, so that a token generated at cache index ``c`` (padding
            excluded) sits at ``c + rope_deltas`` (``transformers``' decoding rule).
    """

    position_ids: Tensor
    rope_deltas: Tensor


def _check_grid(grid: Tensor | None, name: str, merge: int) -> list[tuple[int, int, int]]:
    if grid is None:
        return []
    if not isinstance(grid, Tensor) or grid.dim() != 2 or grid.shape[-1] != 3:
        shape = tuple(grid.shape) if isinstance(grid, Tensor) else grid
        raise ValueError(f"{name} must be a (num, 3) tensor of (T, H, W) patch counts, got {shape}")
    out = []
    for t, h, w in grid.tolist():
        if t < 1 or h < 1 or w < 1 or h % merge or w % merge:
            raise ValueError(
                f"{name} rows must be positive (T, H, W) with H and W divisible by "
                f"spatial_merge_size={merge}, got {(t, h, w)}"
            )
        out.append((int(t), int(h) // merge, int(w) // merge))
    return out


def _token_types(
    input_ids: Tensor,
    mm_token_type_ids: Tensor | None,
    image_token_id: int | None,
    video_token_id: int | None,
) -> Tensor:
    if mm_token_type_ids is not None:
        if tuple(mm_token_type_ids.shape) != tuple(input_ids.shape):
            raise ValueError(
                f"mm_token_type_ids must be (B, L) = {tuple(input_ids.shape)} like input_ids, "
                f"got {tuple(mm_token_type_ids.shape)}"
            )
        return mm_token_type_ids.to(device=input_ids.device, dtype=torch.long)
    types = torch.zeros_like(input_ids, dtype=torch.long)
    for token, kind, name in ((image_token_id, IMAGE, "image"), (video_token_id, VIDEO, "video")):
        if token is None:
            continue
        if isinstance(token, bool) or not isinstance(token, int):
            raise TypeError(f"{name}_token_id must be an int token id, got {token!r}")
        types = torch.where(input_ids == token, kind, types)
    return types


def mrope_positions(
    input_ids: Tensor,
    *,
    image_grid_thw: Tensor | None = None,
    video_grid_thw: Tensor | None = None,
    attention_mask: Tensor | None = None,
    image_token_id: int | None = None,
    video_token_id: int | None = None,
    mm_token_type_ids: Tensor | None = None,
    spatial_merge_size: int = 2,
    sequence_ids: Tensor | None = None,
    delta: Delta = 1.0,
    generator: torch.Generator | None = None,
) -> MRopePositions:
    r"""M-RoPE (t, h, w) position ids of a batch, optionally with V2PE visual increments.

    Qwen2-VL's rule (Wang et al., 2024, arXiv:2409.12191) with V2PE's
    :math:`\delta` (Ge et al., 2024, arXiv:2412.09616) on every visual axis: with
    :math:`r` the running position (:math:`-1` at a sample's start), a text token sits at
    :math:`r + 1` on all three axes; the token of frame :math:`t`, row :math:`h`, column
    :math:`w` of a visual grid :math:`(T, H', W')` (``H' = H / m``, ``W' = W / m`` after the
    ``m x m`` spatial merge) sits at

    .. math::
        (r + \delta (t + 1),\; r + \delta (h + 1),\; r + \delta (w + 1)),
        \qquad r \leftarrow r + \lceil \delta \max(T, H', W') \rceil \text{ after it.}

    ``delta = 1`` is Qwen2-VL's rule: visual positions start at the next text position and the
    following text starts one past the largest visual position. (``transformers`` 5.23's
    ``get_rope_index`` advances by ``max(H', W')`` only, so the two differ for videos with
    more frames than rows and columns; they agree otherwise.)

    Visual tokens are recognised by ``mm_token_type_ids`` (0 text, 1 image, 2 video, as
    ``transformers`` 5 processors return) or by ``image_token_id`` / ``video_token_id``.
    Grids are consumed in order, each taking ``T * H' * W'`` consecutive tokens. Padding is
    skipped and holds 0; packed rows restart at every ``sequence_ids`` change (a grid never
    spans two samples), as in :func:`~multipos.llm.v2pe_position_ids`.

    Args:
        input_ids: ``(B, L)`` integer token ids.
        image_grid_thw: ``(num_images, 3)`` (T, H, W) patch counts of the images, in order.
        video_grid_thw: ``(num_videos, 3)`` of the videos.
        attention_mask: ``(B, L)`` 1 for tokens, 0 for padding (left or right).
        image_token_id: Id of the image placeholder token.
        video_token_id: Id of the video placeholder token.
        mm_token_type_ids: ``(B, L)`` modality of every token, instead of the token ids.
        spatial_merge_size: ``m``, patches merged per side before the language model (2).
        sequence_ids: ``(B, L)`` sample ids of packed rows.
        delta: Visual increment in (0, 1], or a set to draw one from per image/video.
        generator: Required when ``delta`` is a set.

    Returns:
        :class:`MRopePositions` ``(position_ids (3, B, L) float32, rope_deltas (B, 1) long)``.

    Raises:
        TypeError: On non-integer ids or token ids.
        ValueError: On shapes other than ``(B, L)``, grids that are not ``(num, 3)`` or not
            divisible by the merge size, visual tokens that do not match the grids (too few,
            too many, a grid cut by a sample boundary or by text), or a bad delta.
    """
    if isinstance(spatial_merge_size, bool) or not isinstance(spatial_merge_size, int):
        raise TypeError(f"spatial_merge_size must be an int, got {spatial_merge_size!r}")
    if spatial_merge_size < 1:
        raise ValueError(f"spatial_merge_size must be >= 1, got {spatial_merge_size}")
    valid, starts = check_token_inputs(input_ids, attention_mask, sequence_ids)
    types = _token_types(input_ids, mm_token_type_ids, image_token_id, video_token_id)
    grids = {
        IMAGE: _check_grid(image_grid_thw, "image_grid_thw", spatial_merge_size),
        VIDEO: _check_grid(video_grid_thw, "video_grid_thw", spatial_merge_size),
    }
    names = {IMAGE: "image", VIDEO: "video"}
    used = {IMAGE: 0, VIDEO: 0}
    deltas = draw_deltas(delta, len(grids[IMAGE]) + len(grids[VIDEO]), generator).tolist()
    batch, length = input_ids.shape
    out = torch.zeros(3, batch, length, dtype=torch.float64)
    rope_deltas = []
    # Runs of tokens of one modality, all real or all padding, inside one sample.
    key = types * 2 + valid.long()
    breaks = torch.ones_like(valid)
    breaks[:, 1:] = (key[:, 1:] != key[:, :-1]) | starts[:, 1:]
    drawn = 0
    for b in range(batch):
        bounds = breaks[b].nonzero().flatten().tolist()
        kinds = types[b, bounds].tolist()
        real = valid[b, bounds].tolist()
        first = starts[b, bounds].tolist()
        r, tokens_in_sample = -1, 0
        ends = [*bounds[1:], length] if bounds else []
        for run, (s, e) in enumerate(zip(bounds, ends, strict=True)):
            if not real[run]:
                continue
            if first[run]:
                r, tokens_in_sample = -1, 0
            kind = kinds[run]
            tokens_in_sample += e - s
            if kind == TEXT:
                out[:, b, s:e] = r + torch.arange(1, e - s + 1, dtype=torch.float64)
                r += e - s
                continue
            if kind not in grids:
                raise ValueError(f"mm_token_type_ids must be 0, 1 or 2, got {kind} in row {b}")
            i = s
            while i < e:
                if used[kind] >= len(grids[kind]):
                    raise ValueError(
                        f"row {b} has more {names[kind]}s than the {len(grids[kind])} rows of "
                        f"{names[kind]}_grid_thw"
                    )
                t, h, w = grids[kind][used[kind]]
                used[kind] += 1
                count = t * h * w
                if i + count > e:
                    raise ValueError(
                        f"{names[kind]} grid {(t, h * spatial_merge_size, w * spatial_merge_size)}"
                        f" needs {count} consecutive {names[kind]} tokens of one sample at row "
                        f"{b}, token {i}; found {e - i}"
                    )
                d = deltas[drawn]
                drawn += 1
                # (3, T, H', W') grid indices, flattened frame by frame, row by row.
                grid = torch.stack(
                    torch.meshgrid(
                        torch.arange(t, dtype=torch.float64),
                        torch.arange(h, dtype=torch.float64),
                        torch.arange(w, dtype=torch.float64),
                        indexing="ij",
                    )
                ).reshape(3, count)
                out[:, b, i : i + count] = r + d * (grid + 1)
                r += image_slots(max(t, h, w), d)
                i += count
        rope_deltas.append(r + 1 - tokens_in_sample)
    for kind, items in grids.items():
        if used[kind] != len(items):
            raise ValueError(
                f"{names[kind]}_grid_thw has {len(items)} rows but the batch holds "
                f"{used[kind]} {names[kind]}s"
            )
    deltas_tensor = torch.tensor(rope_deltas, dtype=torch.long).view(batch, 1)
    return MRopePositions(out.float().to(input_ids.device), deltas_tensor.to(input_ids.device))
