r"""Rotary position embedding over ``A`` position axes, with float positions.

One primitive covers 1-D RoPE, axial 2-D/3-D RoPE for patch grids, multimodal sectioned RoPE
(Qwen2-VL M-RoPE), V2PE's fractional positions and HiRoPE's hierarchical axes: a position
tensor ``positions: (A, ..., L)`` is mapped onto sections of the ``D / 2`` rotary channel pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from multipos.frequencies import FrequencyScaling, rotary_inv_freq, scaled_inv_freq
from multipos.rotary_turn import rotate

__all__ = [
    "Layout",
    "RotaryEmbedding",
    "RotaryTables",
    "Spectrum",
    "apply_rotary",
    "rotate_pairs",
]

Layout = Literal["half", "interleaved"]
Spectrum = Literal["per_axis", "shared"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
SPECTRA: tuple[str, ...] = get_args(Spectrum)


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def _check_finite(values: Tensor, name: str) -> None:
    # A data-dependent check: skipped while compiling/exporting (it would break the graph).
    if torch.compiler.is_compiling() or not values.is_floating_point():
        return
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{name} must be finite, got NaN or inf in {tuple(values.shape)}")


class RotaryTables(tuple[Tensor, Tensor]):
    """``(cos, sin)`` rotary tables that carry the channel layout they were built for.

    A pair, so ``cos, sin = tables`` works; :func:`multipos.attention` reads ``layout`` from it,
    so a table built for one pairing cannot be applied with the other. Returned by
    :class:`RotaryEmbedding` and :class:`multipos.vision.MixedRotaryEmbedding`.

    Args:
        cos: ``(..., L, D)``.
        sin: Same shape as ``cos``.
        layout: ``"half"`` or ``"interleaved"``: how the tables pair the channels.

    Raises:
        ValueError: If ``layout`` is unknown.
    """

    layout: Layout

    def __new__(cls, cos: Tensor, sin: Tensor, layout: Layout) -> RotaryTables:
        _check_layout(layout)
        tables = super().__new__(cls, (cos, sin))
        tables.layout = layout
        return tables

    def __getnewargs__(self) -> tuple[Tensor, Tensor, Layout]:
        # Copy and pickle through __new__, which needs the layout.
        return self[0], self[1], self.layout

    @property
    def cos(self) -> Tensor:
        return self[0]

    @property
    def sin(self) -> Tensor:
        return self[1]

    def __repr__(self) -> str:
        return f"RotaryTables(shape={tuple(self[0].shape)}, layout={self.layout!r})"


def rotate_pairs(x: Tensor, layout: Layout) -> Tensor:
    r"""Map each channel pair :math:`(a, b)` to :math:`(-b, a)` (multiplication by ``i``).

    ``"half"`` pairs channel ``i`` with ``i + D/2`` (GPT-NeoX, Hugging Face Llama);
    ``"interleaved"`` pairs ``2i`` with ``2i + 1`` (GPT-J, Meta Llama, timm's default).

    Raises:
        ValueError: If ``layout`` is unknown or the channel count ``D`` is odd.
    """
    if x.shape[-1] % 2:
        raise ValueError(f"channel pairs need an even width, got {x.shape[-1]} ({tuple(x.shape)})")
    if layout == "half":
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((-x2, x1), dim=-1)
    if layout == "interleaved":
        # (..., D) -> (..., D/2, 2) -> (..., D)
        return torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)
    _check_layout(layout)
    raise AssertionError("unreachable")


def _complex_ok(x: Tensor, cos: Tensor, sin: Tensor) -> bool:
    # Complex views exist for float32/float64 only, and need pairs aligned in memory: unit
    # last stride, even other strides and offset. Compilers get the real-valued form.
    if torch.compiler.is_compiling():
        return False
    return bool(
        x.dtype in (torch.float32, torch.float64)
        and cos.dtype == x.dtype
        and sin.dtype == x.dtype
        and x.stride(-1) == 1
        and x.storage_offset() % 2 == 0
        and all(stride % 2 == 0 for stride in x.stride()[:-1])
    )


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor, layout: Layout) -> Tensor:
    r"""Rotate the channel pairs of ``x`` by the angles whose cos/sin are given.

    From "RoFormer: Enhanced Transformer with Rotary Position Embedding" (Su et al., 2021,
    arXiv:2104.09864), Eq. (34):

    .. math::
        R_\Theta x = x \odot \cos + \operatorname{rot}(x) \odot \sin

    where :math:`\operatorname{rot}` maps each pair :math:`(a, b)` to :math:`(-b, a)`.
    If ``cos`` has ``R < D`` channels, only the first ``R`` channels of ``x`` are rotated and the
    rest pass through unchanged (partial rotary). The product is taken in the wider of the two
    dtypes and the result is returned in ``x.dtype``.

    Args:
        x: ``(..., L, D)``, e.g. ``q: (B, H, L, D)``.
        cos: ``(..., L, R)`` broadcastable to ``x``, as returned by :class:`RotaryEmbedding`.
        sin: Same shape as ``cos``.
        layout: ``"half"`` or ``"interleaved"``; required, and must be the layout ``cos``/``sin``
            were built with (``tables.layout`` of the :class:`RotaryTables` they came from).
            :func:`multipos.attention` takes the tables whole and checks this for you.

    Returns:
        Tensor of the shape and dtype of ``x``.

    Raises:
        TypeError: If ``x``, ``cos`` or ``sin`` is not floating point.
        ValueError: If ``layout`` is unknown, ``cos`` and ``sin`` differ in shape, the tables
            cover another number of positions than ``x``, or the rotary width is odd or wider
            than ``x``.
    """
    _check_layout(layout)
    if not (x.is_floating_point() and cos.is_floating_point() and sin.is_floating_point()):
        raise TypeError(
            f"apply_rotary needs floating-point x, cos and sin, got {x.dtype}, {cos.dtype}, "
            f"{sin.dtype}"
        )
    if cos.shape != sin.shape:
        raise ValueError(f"cos and sin must have the same shape, got {cos.shape} and {sin.shape}")
    if cos.dim() >= 2 and x.dim() >= 2 and cos.shape[-2] not in (1, x.shape[-2]):
        raise ValueError(
            f"rotary tables cover {cos.shape[-2]} positions but x has "
            f"{x.shape[-2]} (x: {tuple(x.shape)}, cos: {tuple(cos.shape)}); build the tables "
            "for this sequence"
        )
    rot, dim = cos.shape[-1], x.shape[-1]
    if rot % 2 or rot > dim:
        raise ValueError(
            f"rotary width {rot} must be even and at most the channel count {dim} of x "
            f"(x: {tuple(x.shape)}, cos: {tuple(cos.shape)})"
        )
    if layout == "interleaved" and _complex_ok(x, cos, sin):
        # Same arithmetic as below, as one complex multiplication by exp(i phi) per pair:
        # several times faster than the strided real-valued rotation.
        head = x if rot == dim else x[..., :rot]
        turn = torch.complex(cos[..., 0::2], sin[..., 0::2])
        pairs = head.view(*head.shape[:-1], rot // 2, 2)  # (..., D) -> (..., D/2, 2)
        out = torch.view_as_real(rotate(torch.view_as_complex(pairs), turn))
        out = out.flatten(-2)
        return out if rot == dim else torch.cat((out, x[..., rot:]), dim=-1)
    if rot == dim:
        return (x * cos + rotate_pairs(x, layout) * sin).to(x.dtype)
    head, tail = x[..., :rot], x[..., rot:]
    out = head * cos + rotate_pairs(head, layout) * sin
    return torch.cat((out.to(x.dtype), tail), dim=-1)


def _resolve_sections(num_slots: int, num_axes: int, sections: Sequence[int] | None) -> list[int]:
    if num_axes < 1:
        raise ValueError(f"num_axes must be >= 1, got {num_axes}")
    if sections is None:
        if num_slots % num_axes:
            raise ValueError(
                f"cannot split {num_slots} channel pairs evenly over {num_axes} axes; "
                "pass sections=(pairs per axis, ...) summing to head_dim // 2"
            )
        return [num_slots // num_axes] * num_axes
    out = [int(s) for s in sections]
    if len(out) != num_axes:
        raise ValueError(f"sections {out} must have one entry per axis (num_axes={num_axes})")
    if any(s < 0 for s in out) or sum(out) != num_slots:
        raise ValueError(
            f"sections {out} must be non-negative channel-pair counts summing to head_dim // 2 "
            f"= {num_slots}"
        )
    return out


class RotaryEmbedding(nn.Module):
    r"""cos/sin tables of rotary position embedding over ``A`` position axes.

    From "RoFormer: Enhanced Transformer with Rotary Position Embedding" (Su et al., 2021,
    arXiv:2104.09864); axial N-D form as in "Rotary Position Embedding for Vision
    Transformer" (Heo et al., 2024, arXiv:2403.13298); sectioned multi-axis form as in Qwen2-VL
    M-RoPE (Wang et al., 2024, arXiv:2409.12191).

    The ``D / 2`` channel pairs are split into contiguous ``sections``, one per axis; pair
    ``j`` in the section of axis ``a`` turns by

    .. math::
        \phi_j = p_a \, \theta_j, \qquad
        \theta_j = \begin{cases}
            b^{-j'/S_a} & \text{spectrum = "per\_axis" (} j' \text{ = index within the section)} \\
            b^{-2j/D} & \text{spectrum = "shared"}
        \end{cases}

    so that :math:`\langle R(p) q, R(p') k \rangle` depends on the positions only through
    :math:`p - p'`. ``"per_axis"`` gives every axis the full frequency range (axial ViT RoPE);
    ``"shared"`` splits one spectrum between the axes (M-RoPE, HiRoPE). For ``A = 1`` both are
    plain RoPE. Frequencies and angles are float32 (float64 for float64 positions) whatever the
    module's dtype: casting the module to bf16/fp16 keeps the frequencies in float32.

    Args:
        head_dim: Channels per head that rotate, ``D`` (even): the attention head width, or
            less for partial rotary (the remaining channels pass through; see
            :func:`apply_rotary`).
        num_axes: Position axes ``A``.
        sections: Channel pairs per axis, summing to ``D / 2``; default: an even split.
        spectrum: ``"per_axis"`` or ``"shared"`` (see above).
        base: RoPE base ``b`` (10000 in RoFormer; 100 in RoPE-ViT axial).
        layout: ``"half"`` or ``"interleaved"`` channel pairing of the returned tables.
        scaling: Context-extension scaling, a :class:`~multipos.frequencies.FrequencyScaling`,
            a mapping of its fields or a kind name. With ``"per_axis"`` it applies to each axis
            with that axis's width.
        device: Device of the frequency buffer.

    Shape:
        ``forward(positions)`` with ``positions: (A, ..., L)`` (or ``(L,)`` when ``A = 1``)
        returns :class:`RotaryTables` ``(cos, sin)``, each ``(..., L, D)``, carrying ``layout``.

    Raises:
        TypeError: If ``head_dim`` is not an int (``"64"``, ``64.0``), or ``forward`` is asked
            for a non-floating ``dtype``.
        ValueError: On an odd ``head_dim``, sections that do not sum to ``D / 2``, an unknown
            ``layout``/``spectrum``, positions whose first axis is not ``A``, or non-finite
            positions (NaN, inf).
    """

    inv_freq: Tensor
    axis_of_pair: Tensor

    def __init__(
        self,
        head_dim: int,
        *,
        num_axes: int = 1,
        sections: Sequence[int] | None = None,
        spectrum: Spectrum = "per_axis",
        base: float = 10000.0,
        layout: Layout = "half",
        scaling: FrequencyScaling | Mapping[str, Any] | str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(head_dim, bool) or not isinstance(head_dim, int):
            raise TypeError(
                f"head_dim must be an int, got {head_dim!r} ({type(head_dim).__name__})"
            )
        if head_dim <= 0 or head_dim % 2:
            raise ValueError(f"head_dim must be a positive even number, got {head_dim}")
        _check_layout(layout)
        if spectrum not in SPECTRA:
            raise ValueError(f"spectrum must be one of {SPECTRA}, got {spectrum!r}")
        self.head_dim = head_dim
        self.num_axes = num_axes
        self.sections = _resolve_sections(head_dim // 2, num_axes, sections)
        self.spectrum: Spectrum = spectrum
        self.base = float(base)
        self.layout: Layout = layout
        self.scaling = FrequencyScaling.coerce(scaling)
        if self.scaling.kind == "dynamic" and spectrum == "per_axis" and num_axes > 1:
            raise ValueError("dynamic scaling is defined for one spectrum; use spectrum='shared'")
        axis = torch.repeat_interleave(
            torch.arange(num_axes, device=device), torch.tensor(self.sections, device=device)
        )
        self.register_buffer("axis_of_pair", axis, persistent=False)
        self.register_buffer("inv_freq", self._build_inv_freq(device), persistent=False)

    def _build_inv_freq(self, device: torch.device | str | None) -> Tensor:
        if self.scaling.kind == "dynamic":
            # Depends on the current length: computed in forward. Unscaled kept for reference.
            return rotary_inv_freq(self.head_dim, self.base).to(device)
        if self.spectrum == "shared" or self.num_axes == 1:
            return scaled_inv_freq(self.head_dim, self.base, self.scaling).to(device)
        parts = [scaled_inv_freq(2 * s, self.base, self.scaling) for s in self.sections if s > 0]
        return torch.cat(parts).to(device)

    def _apply(self, fn: Any, recurse: bool = True) -> RotaryEmbedding:
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        # Casting the module to bf16/fp16 must not quantise the frequencies: rebuild in fp32.
        if self.inv_freq.dtype not in (torch.float32, torch.float64):
            self.inv_freq = self._build_inv_freq(self.inv_freq.device)
        return self

    def config(self) -> dict[str, Any]:
        """Constructor arguments, for saving alongside a checkpoint."""
        return {
            "head_dim": self.head_dim,
            "num_axes": self.num_axes,
            "sections": list(self.sections),
            "spectrum": self.spectrum,
            "base": self.base,
            "layout": self.layout,
            "scaling": self.scaling.to_dict(),
        }

    def extra_repr(self) -> str:
        s = f"head_dim={self.head_dim}, num_axes={self.num_axes}, sections={self.sections}, "
        s += f"spectrum={self.spectrum!r}, base={self.base:g}, layout={self.layout!r}"
        if self.scaling.kind != "none":
            s += f", scaling={self.scaling}"
        return s

    def angles(self, positions: Tensor, length: Tensor | float | None = None) -> Tensor:
        r"""Rotation angle of every channel pair, ``(..., L, D / 2)``, in float32 or wider.

        Args:
            positions: ``(A, ..., L)``; integer or float. ``(L,)`` is accepted when ``A = 1``.
            length: Current context length, used only by dynamic NTK scaling; defaults to
                ``max(positions) + 1``.
        """
        if positions.dim() == 1 and self.num_axes == 1:
            positions = positions.unsqueeze(0)
        if positions.dim() < 2 or positions.shape[0] != self.num_axes:
            raise ValueError(
                f"positions must be (A={self.num_axes}, ..., L), got shape {tuple(positions.shape)}"
            )
        _check_finite(positions, "positions")
        wide = torch.float64 if positions.dtype == torch.float64 else torch.float32
        pos = positions.to(wide)
        inv_freq = self.inv_freq.to(wide)
        if self.scaling.kind == "dynamic":
            current = pos.amax() + 1 if length is None else torch.as_tensor(length)
            inv_freq = scaled_inv_freq(self.head_dim, self.base, self.scaling, current).to(
                device=pos.device, dtype=wide
            )
        if self.num_axes == 1:
            return pos[0].unsqueeze(-1) * inv_freq
        # (A, ..., L) -> (..., L, A) -> (..., L, D/2): each pair reads its own axis.
        return pos.movedim(0, -1)[..., self.axis_of_pair] * inv_freq

    def forward(
        self,
        positions: Tensor,
        length: Tensor | float | None = None,
        dtype: torch.dtype | None = None,
    ) -> RotaryTables:
        """Return :class:`RotaryTables` ``(cos, sin)``, each ``(..., L, D)``, in this layout.

        Args:
            positions: ``(A, ..., L)``; ``(L,)`` is accepted when ``A = 1``.
            length: Current context length for dynamic NTK scaling.
            dtype: Cast the finished tables to this dtype (default: keep float32/float64).
        """
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"dtype of rotary tables must be floating point, got {dtype}")
        phi = self.angles(positions, length)
        cos, sin = phi.cos(), phi.sin()
        magnitude = self.scaling.magnitude
        if magnitude != 1.0:
            cos, sin = cos * magnitude, sin * magnitude
        if self.layout == "half":
            cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
        else:
            cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
        if dtype is not None:
            cos, sin = cos.to(dtype), sin.to(dtype)
        return RotaryTables(cos, sin, self.layout)
