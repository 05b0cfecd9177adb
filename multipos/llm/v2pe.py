r"""V2PE: variable visual position increments for interleaved image-text sequences.

From "V2PE: Improving Multimodal Long-Context Capability of Vision-Language Models with
Variable Visual Position Encoding" (Ge et al., 2024, arXiv:2412.09616), its position recursion:
text tokens advance the position by 1, visual tokens by a fraction :math:`\delta \le 1`,
so long interleaved sequences stay inside the position range the language model was trained
on. The positions feed an unchanged rotary embedding (no new parameters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from multipos.llm.packing import check_token_inputs, sample_index

__all__ = ["V2PE_TRAINING_DELTAS", "Delta", "v2pe_position_ids", "v2pe_positions"]

#: V2PE's training set of increments: :math:`\delta = s / 256` with the stride
#: ``s`` drawn per image from {1, 2, 4, ..., 256} (the official ``v2pe_rnd`` mode).
V2PE_TRAINING_DELTAS: tuple[float, ...] = tuple(2.0**-k for k in range(8, -1, -1))

#: A fixed increment, or a set of increments to draw one from per image.
Delta = float | Sequence[float]

# n * delta is formed in float64; a tolerance keeps e.g. 3 * (1/3) at 1 slot, not 2.
_CEIL_TOLERANCE = 1e-9


def image_slots(num_tokens: int, delta: float) -> int:
    r"""Integer position slots an image of ``num_tokens`` visual tokens occupies:
    :math:`\lceil n \delta \rceil`."""
    return math.ceil(num_tokens * delta - _CEIL_TOLERANCE)


def _check_delta(delta: float, name: str = "delta") -> float:
    if isinstance(delta, bool) or not isinstance(delta, (int, float)):
        raise TypeError(f"{name} must be a number in (0, 1], got {delta!r}")
    value = float(delta)
    if not (0.0 < value <= 1.0):
        raise ValueError(
            f"{name} must be in (0, 1] (visual tokens advance by at most 1), got {delta}"
        )
    return value


def draw_deltas(
    delta: Delta, count: int, generator: torch.Generator | None, device: torch.device | None = None
) -> Tensor:
    """``(count,)`` float64 increments: ``delta`` repeated, or drawn uniformly from the set."""
    if isinstance(delta, (int, float)) and not isinstance(delta, bool):
        return torch.full((count,), _check_delta(delta), dtype=torch.float64, device=device)
    if isinstance(delta, (str, bytes)) or not isinstance(delta, Sequence):
        raise TypeError(f"delta must be a number or a sequence of numbers, got {delta!r}")
    choices = [_check_delta(d, "every delta in the set") for d in delta]
    if not choices:
        raise ValueError("delta is an empty set; give at least one increment to draw from")
    if generator is None:
        raise ValueError(
            "delta is a set to draw from per image: pass generator=torch.Generator() "
            "(randomness is explicit)"
        )
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    pick = torch.randint(len(choices), (count,), generator=generator, device=generator.device)
    return torch.tensor(choices, dtype=torch.float64)[pick.cpu()].to(device)


def deltas_pad(device: torch.device | None) -> Tensor:
    return torch.ones(1, dtype=torch.float64, device=device)


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def v2pe_positions(
    segments: Sequence[tuple[str, int]],
    delta: Delta = 0.25,
    tokens_per_tile: int = 256,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""V2PE positions of one interleaved sequence described by its segments.

    From "V2PE: Improving Multimodal Long-Context Capability of Vision-Language Models with
    Variable Visual Position Encoding" (Ge et al., 2024, arXiv:2412.09616), the position
    recursion, with :math:`r` the running position (:math:`r = -1` before the first token),

    .. math::
        p_{\text{text}} = r + 1, \qquad
        p_{\text{vis}, k} = r + k\,\delta \quad (k = 1, \dots, n), \qquad
        r \leftarrow r + \lceil n\,\delta \rceil \text{ after the image,}

    for an image of ``n = tiles * tokens_per_tile`` visual tokens, so an image occupies
    :math:`\lceil n\,\delta \rceil` integer slots (the official code's rounding up after each
    image). With :math:`\delta = s / 256` and 256 tokens per tile this is
    :math:`\lceil \text{tiles} \cdot s \rceil` slots. ``delta = 1`` gives ``arange(L)``.

    Training mode (the paper's training recipe, official ``v2pe_rnd``): pass a set of increments,
    e.g. :data:`V2PE_TRAINING_DELTAS` = {1/256, 1/128, ..., 1/2, 1}, and a generator; one
    increment is drawn uniformly per image, independently, in order of the images.

    Args:
        segments: ``("text", num_tokens)`` and ``("image", num_tiles)`` pairs in sequence
            order (counts >= 0 and >= 1 respectively).
        delta: Visual increment in (0, 1] (default 1/4, the paper's evaluation stride 64),
            or a set of increments to draw one from per image.
        tokens_per_tile: Visual tokens per tile (256 in InternVL2 / V2PE).
        generator: Required when ``delta`` is a set; the only source of randomness.

    Returns:
        ``(L,)`` float32 positions (computed in float64, cast once). float32 holds a step of
        :math:`\delta = 2^{-k}` exactly below position :math:`2^{24-k}` (65,536 for
        :math:`\delta = 1/256`); beyond it visual positions round to the nearest float32, as
        the official code's float32 positions do. Text positions stay exact to :math:`2^{24}`.

    Raises:
        TypeError: On a segment that is not a ``(kind, count)`` pair, non-int counts, or a
            ``generator`` that is not a ``torch.Generator``.
        ValueError: On an unknown segment kind, negative counts, an image without tiles, a
            delta outside (0, 1], or a set of increments without a generator.
    """
    tokens_per_tile = _check_count(tokens_per_tile, "tokens_per_tile", 1)
    parsed: list[tuple[str, int]] = []
    for i, segment in enumerate(segments):
        if not (isinstance(segment, (tuple, list)) and len(segment) == 2):
            raise TypeError(
                f"segments[{i}] must be a (kind, count) pair such as ('text', 12) or "
                f"('image', 2), got {segment!r}"
            )
        kind, count = segment
        if kind == "text":
            parsed.append((kind, _check_count(count, f"segments[{i}] text length", 0)))
        elif kind == "image":
            tiles = _check_count(count, f"segments[{i}] image tiles", 1)
            parsed.append((kind, tiles * tokens_per_tile))
        else:
            raise ValueError(f"segments[{i}] kind must be 'text' or 'image', got {kind!r}")
    num_images = sum(kind == "image" for kind, _ in parsed)
    deltas = draw_deltas(delta, num_images, generator).tolist()
    pieces: list[Tensor] = []
    r, image = -1, 0
    for kind, count in parsed:
        steps = torch.arange(1, count + 1, dtype=torch.float64)
        if kind == "text":
            pieces.append(r + steps)
            r += count
        else:
            d = deltas[image]
            pieces.append(r + steps * d)
            r += image_slots(count, d)
            image += 1
    if not pieces:
        return torch.zeros(0, dtype=torch.float32)
    return torch.cat(pieces).float()


def v2pe_position_ids(
    input_ids: Tensor,
    image_token_id: int,
    attention_mask: Tensor | None = None,
    *,
    delta: Delta = 0.25,
    sequence_ids: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""V2PE ``position_ids`` of a (padded, possibly packed) batch of token ids.

    The rule of :func:`v2pe_positions` (Ge et al., 2024, arXiv:2412.09616) applied
    to token ids: every maximal run of consecutive ``image_token_id`` tokens is one image
    (InternVL wraps each image in ``<img> ... </img>``, so images are never adjacent); its
    ``k``-th token sits at :math:`r + k\delta` and the image occupies
    :math:`\lceil n\delta \rceil` slots; every other real token advances by 1.

    Padding (``attention_mask == 0``, left or right) is skipped: real tokens are numbered as if
    the padding were absent, and padding positions hold 0 (as ``generate()`` of
    ``transformers`` 5 fills them); they are masked out of attention anyway.

    Packed rows: ``sequence_ids`` gives the sample id of every token; positions restart at 0
    wherever the id changes between consecutive real tokens, and an image never spans two
    samples. Pair it with :func:`~multipos.llm.packed_attention_mask` so attention is blocked
    across samples.

    Args:
        input_ids: ``(B, L)`` integer token ids.
        image_token_id: Id of the visual (image-context) token.
        attention_mask: ``(B, L)`` 1 for tokens, 0 for padding; default: no padding.
        delta: Visual increment in (0, 1], or a set to draw one from per image (training
            mode; images are drawn in row-major order of their first token).
        sequence_ids: ``(B, L)`` integer sample ids of packed rows; default: one sample a row.
        generator: Required when ``delta`` is a set.

    Returns:
        ``(B, L)`` float32 positions (float64 arithmetic, cast once); ``delta = 1`` gives
        ``attention_mask.cumsum(-1) - 1`` per sample.

    Raises:
        TypeError: If ``input_ids``/``sequence_ids`` are not integer or ``image_token_id`` is
            not an int.
        ValueError: On shapes other than ``(B, L)``, a mask that is not 0/1, or a bad delta.
    """
    if isinstance(image_token_id, bool) or not isinstance(image_token_id, int):
        raise TypeError(f"image_token_id must be an int token id, got {image_token_id!r}")
    valid, starts = check_token_inputs(input_ids, attention_mask, sequence_ids)
    batch, length = input_ids.shape
    device = input_ids.device
    is_img = valid & (input_ids == image_token_id)
    # A run of image tokens starts after a non-image token or at a sample start; it ends
    # before a non-image token or a sample start.
    before = torch.cat((is_img.new_zeros(batch, 1), is_img[:, :-1]), dim=-1)
    after = torch.cat((is_img[:, 1:], is_img.new_zeros(batch, 1)), dim=-1)
    next_start = torch.cat((starts[:, 1:], starts.new_zeros(batch, 1)), dim=-1)
    run_start = is_img & (~before | starts)
    run_end = is_img & (~after | next_start)

    flat_img = is_img.flatten()
    run_id = run_start.flatten().long().cumsum(0) - 1  # (B*L,): image index per token
    num_runs = int(run_start.sum())
    # One spare entry so that indexing by run stays valid in rows (or batches) without images.
    deltas = torch.cat((draw_deltas(delta, num_runs, generator, device), deltas_pad(device)))
    counted = flat_img.long().cumsum(0)
    start_count = torch.cat((counted[run_start.flatten()], counted.new_zeros(1)))
    run_of_img = run_id.clamp(min=0)
    k = (counted - start_count[run_of_img] + 1).to(torch.float64)  # 1-based index in run
    run_len = torch.zeros(num_runs + 1, dtype=torch.long, device=device)
    run_len.index_add_(0, run_id[flat_img], torch.ones_like(run_id[flat_img]))
    slots_per_run = torch.ceil(run_len.to(torch.float64) * deltas - _CEIL_TOLERANCE)

    slots = torch.where(valid & ~is_img, 1.0, 0.0).to(torch.float64).flatten()
    slots = torch.where(run_end.flatten(), slots_per_run[run_of_img], slots).view(batch, length)
    total = slots.cumsum(dim=-1)  # (B, L): slots used up to and including each token
    before_token = total - slots
    offset = before_token.gather(1, sample_index(valid, starts))  # slots before the sample
    base = before_token - offset - 1  # r: running position before the token
    visual = base + k.view(batch, length) * deltas[run_of_img].view(batch, length)
    positions = torch.where(is_img, visual, base + 1)
    return torch.where(valid, positions, 0.0).float()
