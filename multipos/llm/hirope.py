r"""HiRoPE: hierarchical rotary positions from the structure of source code.

From "HiRoPE: Length Extrapolation for Code Models Using Hierarchical Position" (Kechi Zhang,
Ge Li, Huangzhao Zhang, Zhi Jin, ACL 2024, arXiv:2403.19115). A token's position is a vector
with one entry per level of the code's hierarchy, ``p = (p_token, p_block)``: its index inside
its block (function / class / top-level code) and the index of that block. The rotary channel
pairs are split into groups, one per level, and each group turns by its level's position:

.. math::
    \phi_j(p) = p_{a(j)} \, \theta_j, \qquad \theta_j = b^{-2j/D},

with :math:`a(j) = 0` (token level) on the first, high-frequency ``sections[0]`` pairs and
:math:`a(j) = 1` (block level) on the remaining, low-frequency pairs. The score of a query at
``p`` and a key at ``p'`` then depends only on the per-level offsets ``p - p'``. Near pairs can
keep the model's flat positions (the paper's window mechanism, its Fig. 2): pairs closer than
``window`` tokens use flat RoPE, farther pairs HiRoPE.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from multipos.frequencies import FrequencyScaling
from multipos.llm.code_hierarchy import DEFINITION_KINDS, CodeHierarchy, CodeSpan
from multipos.rotary import Layout, RotaryEmbedding, RotaryTables

__all__ = [
    "HierarchicalRotaryEmbedding",
    "hirope_positions",
    "hirope_sections",
    "window_logits",
]

MAX_LEVELS = 3


def _check_levels(levels: object) -> int:
    if isinstance(levels, bool) or not isinstance(levels, int):
        raise TypeError(f"levels must be an int (1, 2 or 3), got {levels!r}")
    if not 1 <= levels <= MAX_LEVELS:
        raise ValueError(
            f"levels must be 1 (flat), 2 (token, block) or 3 (token, statement, block), "
            f"got {levels}"
        )
    return levels


def _offsets_tensor(offsets: object, source_length: int | None) -> Tensor:
    if isinstance(offsets, Tensor):
        table = offsets
    else:
        try:
            table = torch.as_tensor(offsets)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                f"offsets must be an (L, 2) tensor or nested sequence of ints, got "
                f"{type(offsets).__name__}: {err}"
            ) from err
    if table.dim() == 1 and table.numel() == 0:  # [] (an empty list has no integer dtype)
        table = torch.zeros(0, 2, dtype=torch.int64)
    if table.dim() != 2 or table.shape[1] != 2:
        raise ValueError(f"offsets must be (L, 2) (start, end) per token, got {tuple(table.shape)}")
    if table.is_floating_point() or table.is_complex() or table.dtype == torch.bool:
        raise TypeError(f"offsets must be integers, got {table.dtype}")
    table = table.to(torch.int64).cpu()
    start, end = table[:, 0], table[:, 1]
    if bool((start < 0).any()) or bool((end < start).any()):
        raise ValueError("offsets need 0 <= start <= end for every token")
    if source_length is not None and bool((end > source_length).any()):
        raise ValueError(
            f"offsets reach character {int(end.max())} but the source has {source_length}"
        )
    real = start[end > start]
    if bool((real[1:] < real[:-1]).any()):
        raise ValueError("offsets must be in text order (non-decreasing starts)")
    return table


def _boundaries(spans: Sequence[CodeSpan], source: str | None, statements: bool) -> Tensor:
    """Sorted character offsets where a new block (or statement) starts."""
    cuts = {0}
    for span in spans:
        if span.kind in DEFINITION_KINDS or (statements and span.kind == "statement"):
            cuts.add(span.start)
            resume = span.end
            if source is not None:  # the code after a definition starts at its next character
                rest = source[resume:]
                resume += len(rest) - len(rest.lstrip())
            cuts.add(resume)
    return torch.tensor(sorted(cuts), dtype=torch.int64)


def _anchors(table: Tensor, source: str | None) -> Tensor:
    """The character that places each token: its first non-whitespace character (its start if
    it is all whitespace); tokens with empty offsets borrow their neighbour's."""
    start, end = table[:, 0], table[:, 1]
    anchor = start.clone()
    if source is not None and len(source) > 0:
        blank = torch.tensor([ch.isspace() for ch in source] + [False])
        index = torch.arange(len(source) + 1)
        # next non-whitespace character at or after every offset (reverse running minimum)
        nxt = torch.where(blank, len(source), index).flip(0).cummin(0).values.flip(0)
        first = nxt[start.clamp(max=len(source))]
        anchor = torch.where(first < end, first, start)
    empty = end == start
    if bool(empty.any()):
        n = len(anchor)
        index = torch.arange(n)
        before = torch.where(~empty, index, -1).cummax(0).values
        after = torch.where(~empty, index, n).flip(0).cummin(0).values.flip(0)
        borrow = torch.where(before >= 0, before, after)
        anchor = torch.where(borrow < n, anchor[borrow.clamp(max=n - 1)], 0)
    return anchor


def _runs(ids: Tensor) -> tuple[Tensor, Tensor]:
    """For non-decreasing ``ids``: (index inside its run of equal ids, run number)."""
    n = len(ids)
    index = torch.arange(n)
    new = torch.ones(n, dtype=torch.bool)
    new[1:] = ids[1:] != ids[:-1]
    first = torch.where(new, index, 0).cummax(0).values if n else index
    return index - first, new.cumsum(0) - 1


def hirope_positions(
    spans: CodeHierarchy | Sequence[CodeSpan], offsets: object, levels: int = 2
) -> Tensor:
    r"""Hierarchical positions of the tokens of a tokenized source string.

    From "HiRoPE: Length Extrapolation for Code Models Using Hierarchical Position" (Zhang et
    al., ACL 2024, arXiv:2403.19115), hierarchical position: token ``t`` that is the ``i``-th
    token of the ``b``-th block gets

    .. math::
        p_t = (p_t^{(0)}, p_t^{(1)}) = (i, b), \qquad i, b = 0, 1, 2, \ldots

    (token level first, as row 0 of the result). The paper describes a two-level position
    vector (function level, token level) from the syntax tree; that the token index restarts
    in every block, and what counts as a block, are this library's choices. A block is a
    class or function definition
    (any depth; a class's own lines before its first method are a block of their own) or the
    run of code between definitions, so the blocks partition the source in text order.
    ``levels=3`` inserts the statement level: ``(token in statement, statement in block,
    block)``; ``levels=1`` is the flat index ``t``.

    Token placement rules:

    * A token belongs to the unit containing its first non-whitespace character (its start if
      it is all whitespace), so a token that spans a boundary (``" def"``, ``"\n\nclass"``)
      opens the new unit. Without the source (plain span lists) the start character decides.
    * A token with empty offsets (``start == end``; special tokens such as BOS/EOS with
      ``(0, 0)``) takes the place of the token before it, continuing its unit's count; at the
      start of the sequence, the place of the first real token.
    * Counts are over tokens, not characters: positions step by one per token in a unit.

    Args:
        spans: :func:`multipos.llm.code_hierarchy` of the source (preferred: it carries the
            source for the whitespace rule) or a sequence of :class:`CodeSpan`.
        offsets: ``(L, 2)`` character ``(start, end)`` of every token, as a Hugging Face fast
            tokenizer returns with ``return_offsets_mapping=True`` (tensor, array or lists).
        levels: 1, 2 or 3.

    Returns:
        ``(levels, L)`` int64; every row is non-decreasing across units and row 0 restarts at
        0 in every unit.

    Raises:
        TypeError: If ``spans`` holds something else than :class:`CodeSpan` s, or ``offsets``
            or ``levels`` has the wrong type.
        ValueError: If ``offsets`` is not ``(L, 2)``, has ``end < start``, negative values,
            offsets past the source, or starts out of text order; if ``levels`` is not 1-3.
    """
    levels = _check_levels(levels)
    source = spans.source if isinstance(spans, CodeHierarchy) else None
    items = tuple(spans)
    bad = [type(s).__name__ for s in items if not isinstance(s, CodeSpan)]
    if bad:
        raise TypeError(f"spans must be a CodeHierarchy or CodeSpan sequence, got {bad[0]}")
    table = _offsets_tensor(offsets, None if source is None else len(source))
    length = table.shape[0]
    if levels == 1:
        return torch.arange(length).unsqueeze(0)
    anchor = _anchors(table, source)
    block = torch.searchsorted(_boundaries(items, source, False), anchor, right=True) - 1
    block = block.clamp(min=0).cummax(0).values if length else block
    token_in_block, block_id = _runs(block)
    if levels == 2:
        return torch.stack((token_in_block, block_id))
    unit = torch.searchsorted(_boundaries(items, source, True), anchor, right=True) - 1
    unit = unit.clamp(min=0).cummax(0).values if length else unit
    token_in_unit, unit_id = _runs(unit)
    first_unit = torch.zeros_like(unit_id)
    if length:
        block_start = torch.arange(length) - token_in_block
        first_unit = unit_id[block_start]
    return torch.stack((token_in_unit, unit_id - first_unit, block_id))


def hirope_sections(head_dim: int, levels: int = 2) -> list[int]:
    """Default channel pairs per level: an even split of the ``head_dim // 2`` pairs, the
    high-frequency pairs (first) to the token level, any remainder to the token level."""
    levels = _check_levels(levels)
    pairs = head_dim // 2
    share = [pairs // levels] * levels
    share[0] += pairs - sum(share)
    return share


class HierarchicalRotaryEmbedding(nn.Module):
    r"""HiRoPE rotary tables: the core multi-axis rotary with one axis per hierarchy level.

    From "HiRoPE: Length Extrapolation for Code Models Using Hierarchical Position" (Zhang et
    al., ACL 2024, arXiv:2403.19115), split dimensions: one RoPE spectrum
    :math:`\theta_j = b^{-2j/D}` is split into contiguous groups; pair ``j`` turns by
    :math:`p_{a(j)} \theta_j` where ``a(j)`` is the level whose group holds ``j`` (token level
    on the high frequencies). A :class:`multipos.RotaryEmbedding` with ``spectrum="shared"``
    and ``num_axes = levels``; with ``sections = (D/2, 0, ...)`` and flat token positions it
    is plain RoPE.

    Args:
        head_dim: Rotary channels per head ``D`` (even).
        levels: Hierarchy levels ``A`` (2: token, block; 3: token, statement, block).
        sections: Channel pairs per level, summing to ``D / 2``; default
            :func:`hirope_sections` (an even split).
        base: RoPE base ``b``.
        layout: ``"half"`` (Hugging Face Llama) or ``"interleaved"``.
        scaling: Optional frequency scaling (see :class:`multipos.frequencies.FrequencyScaling`).

    Shape:
        ``forward(positions)`` with ``positions: (A, ..., L)`` returns
        :class:`multipos.RotaryTables` ``(cos, sin)``, each ``(..., L, D)``.

    Raises:
        ValueError: As :class:`multipos.RotaryEmbedding`, and for ``levels`` outside 1-3.
    """

    def __init__(
        self,
        head_dim: int,
        *,
        levels: int = 2,
        sections: Sequence[int] | None = None,
        base: float = 10000.0,
        layout: Layout = "half",
        scaling: FrequencyScaling | Mapping[str, Any] | str | None = None,
    ) -> None:
        super().__init__()
        levels = _check_levels(levels)
        if sections is None and isinstance(head_dim, int):
            sections = hirope_sections(head_dim, levels)
        self.rotary = RotaryEmbedding(
            head_dim,
            num_axes=levels,
            sections=sections,
            spectrum="shared",
            base=base,
            layout=layout,
            scaling=scaling,
        )
        self.levels = levels

    def forward(self, positions: Tensor, dtype: torch.dtype | None = None) -> RotaryTables:
        """Return the tables for ``positions: (levels, ..., L)``."""
        return self.rotary.forward(positions, dtype=dtype)


def window_logits(
    near: Tensor, far: Tensor, query_positions: Tensor, key_positions: Tensor, window: int
) -> Tensor:
    r"""Merge two attention-logit tables by token distance: HiRoPE's window.

    .. math::
        s_{ij} = \begin{cases}
            \langle R(i) q_i, R(j) k_j \rangle & |i - j| < w \quad\text{(flat RoPE)} \\
            \langle R(p_i) q_i, R(p_j) k_j \rangle & \text{otherwise (HiRoPE)}
        \end{cases}

    Args:
        near: Logits from flat positions, ``(..., L, S)``.
        far: Logits from hierarchical positions, same shape.
        query_positions: Flat positions of the queries, ``(..., L)`` broadcastable.
        key_positions: Flat positions of the keys, ``(..., S)``.
        window: ``w`` in tokens (``0`` gives ``far`` everywhere).

    Returns:
        ``(..., L, S)``.

    Raises:
        ValueError: If the shapes differ or ``window`` is negative.
    """
    if near.shape != far.shape:
        raise ValueError(f"near and far logits differ in shape: {near.shape} vs {far.shape}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise ValueError(f"window must be a non-negative int, got {window!r}")
    distance = (query_positions.unsqueeze(-1) - key_positions.unsqueeze(-2)).abs()
    return torch.where(distance < window, near, far)
