r"""Rotary inverse frequencies and their context-extension scalings.

A rotary channel pair ``j`` of a ``dim``-channel head turns by ``p * inv_freq[j]`` radians at
position ``p``. The scalings below change ``inv_freq`` (and, for YaRN, the magnitude of
cos/sin) so that a model trained up to ``original_length`` positions can read longer inputs.
They act on frequencies only and are independent of how positions are built.

All math is done in float64 and returned in float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor

__all__ = [
    "FrequencyScaling",
    "ScalingKind",
    "dynamic_ntk_base",
    "rotary_inv_freq",
    "scaled_inv_freq",
    "yarn_attention_factor",
]

ScalingKind = Literal["none", "linear", "ntk", "dynamic", "yarn"]
SCALING_KINDS: tuple[str, ...] = get_args(ScalingKind)


@dataclass(frozen=True)
class FrequencyScaling:
    r"""How rotary frequencies are rescaled for longer contexts.

    Attributes:
        kind: ``"none"``; ``"linear"`` (position interpolation, Chen et al. 2023,
            arXiv:2306.15595); ``"ntk"`` (static NTK-aware base change, bloc97 2023, as
            used by Code Llama); ``"dynamic"`` (dynamic NTK, the base grows with the current
            length once it exceeds ``original_length``); ``"yarn"`` (Peng et al. 2023,
            "YaRN: Efficient Context Window Extension of Large Language Models",
            arXiv:2309.00071).
        factor: Context extension factor ``s`` (>= 1 for the NTK and YaRN kinds).
        original_length: Positions seen in training, ``L0``; required by ``dynamic`` and
            ``yarn``.
        beta_fast: YaRN: channel pairs turning more than ``beta_fast`` times over ``L0``
            keep their frequency (extrapolate).
        beta_slow: YaRN: pairs turning fewer than ``beta_slow`` times are fully
            interpolated (divided by ``s``).
        attention_factor: YaRN: multiplier of cos and sin (so logits scale by its square);
            ``None`` takes the paper's :math:`0.1 \ln s + 1`.

    Raises:
        ValueError: On an unknown kind, a non-finite field (``factor=inf``), a factor out of
            range for the kind, or a missing ``original_length``.
    """

    kind: ScalingKind = "none"
    factor: float = 1.0
    original_length: float | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCALING_KINDS:
            raise ValueError(f"scaling kind must be one of {SCALING_KINDS}, got {self.kind!r}")
        for name in ("factor", "original_length", "beta_fast", "beta_slow", "attention_factor"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"scaling {name} must be finite, got {value}")
        if not self.factor > 0:
            raise ValueError(f"scaling factor must be positive, got {self.factor}")
        if self.kind in ("ntk", "dynamic", "yarn") and self.factor < 1:
            raise ValueError(f"{self.kind} scaling needs factor >= 1, got {self.factor}")
        if self.kind in ("dynamic", "yarn") and (
            self.original_length is None or self.original_length <= 0
        ):
            raise ValueError(
                f"{self.kind} scaling needs original_length (positions seen in training) > 0, "
                f"got {self.original_length}"
            )
        if self.beta_fast <= self.beta_slow:
            raise ValueError(
                f"beta_fast ({self.beta_fast}) must be larger than beta_slow ({self.beta_slow})"
            )

    @classmethod
    def coerce(cls, value: FrequencyScaling | Mapping[str, Any] | str | None) -> FrequencyScaling:
        """Build from ``None``, a kind name, a mapping of fields, or an instance.

        Raises:
            TypeError: If ``value`` has another type or the mapping has unknown keys.
        """
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(kind=value)  # type: ignore[arg-type]
        if isinstance(value, Mapping):
            fields = set(cls.__dataclass_fields__)
            unknown = sorted(set(value) - fields)
            if unknown:
                raise TypeError(
                    f"unknown scaling field(s) {unknown}; valid fields: {sorted(fields)}"
                )
            return cls(**value)
        raise TypeError(
            "scaling must be None, a kind name, a mapping or a FrequencyScaling, "
            f"got {type(value).__name__}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields, for configs and checkpoints."""
        return asdict(self)

    @property
    def magnitude(self) -> float:
        """Multiplier of cos and sin (only YaRN defines one)."""
        if self.kind != "yarn":
            return 1.0
        if self.attention_factor is not None:
            return self.attention_factor
        return yarn_attention_factor(self.factor)


def rotary_inv_freq(dim: int, base: float = 10000.0) -> Tensor:
    r"""Inverse frequencies of rotary embedding for ``dim`` channels.

    From "RoFormer: Enhanced Transformer with Rotary Position Embedding" (Su et al., 2021,
    arXiv:2104.09864), Eq. (15):

    .. math::
        \theta_j = \text{base}^{-2j/\text{dim}}, \quad j = 0, \dots, \text{dim}/2 - 1

    Args:
        dim: Rotary channels this spectrum covers (even): the rotating part of a head
            (``head_dim`` of :class:`~multipos.rotary.RotaryEmbedding`) for 1-D RoPE, or one
            axis's share of it for axial RoPE.
        base: RoPE base.

    Returns:
        ``(dim // 2,)`` float32.

    Raises:
        ValueError: If ``dim`` is not a positive even number or ``base`` <= 1.
    """
    if dim <= 0 or dim % 2:
        raise ValueError(f"rotary dim must be a positive even number, got {dim}")
    if not base > 1:
        raise ValueError(f"rotary base must be > 1, got {base}")
    exponents = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    return (1.0 / base**exponents).float()


def yarn_attention_factor(factor: float) -> float:
    r"""YaRN's attention temperature :math:`\sqrt{1/t} = 0.1 \ln s + 1` (1 for ``s <= 1``).

    From "YaRN" (Peng et al., 2023, arXiv:2309.00071), Eq. (22).
    """
    return 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0


def dynamic_ntk_base(
    base: float, dim: int, factor: float, original_length: float, length: Tensor
) -> Tensor:
    r"""Base of dynamic NTK scaling at the current ``length`` (a tensor, so it traces).

    .. math::
        b' = b \left(\frac{s L}{L_0} - (s - 1)\right)^{d / (d - 2)}, \quad L \leftarrow \max(L, L_0)

    Returns:
        A float64 scalar tensor.
    """
    length = length.to(torch.float64).clamp(min=original_length)
    exponent = dim / (dim - 2) if dim > 2 else 1.0
    return base * (factor * length / original_length - (factor - 1)) ** exponent


def _yarn_ramp(dim: int, base: float, scaling: FrequencyScaling) -> Tensor:
    # Pair j turns original_length * inv_freq_j / (2 pi) times over the training context;
    # solving that for j at beta turns gives the boundary pair index (YaRN Eq. 17-18).
    assert scaling.original_length is not None
    original = scaling.original_length

    def pair_at(turns: float) -> float:
        return (dim * math.log(original / (turns * 2 * math.pi))) / (2 * math.log(base))

    low = float(max(math.floor(pair_at(scaling.beta_fast)), 0))
    high = float(min(math.ceil(pair_at(scaling.beta_slow)), dim - 1))
    if high <= low:
        high = low + 1e-3
    j = torch.arange(dim // 2, dtype=torch.float64)
    # 0 for pairs that keep their frequency, 1 for pairs fully interpolated.
    return ((j - low) / (high - low)).clamp(0.0, 1.0)


def scaled_inv_freq(
    dim: int,
    base: float = 10000.0,
    scaling: FrequencyScaling | Mapping[str, Any] | str | None = None,
    length: Tensor | None = None,
) -> Tensor:
    r"""Inverse frequencies of ``dim`` rotary channels after a context-extension scaling.

    With :math:`\theta_j = b^{-2j/d}` and factor :math:`s`:

    .. math::
        \text{linear: } \theta_j / s \qquad
        \text{ntk: } (b s^{d/(d-2)})^{-2j/d} \qquad
        \text{dynamic: } b'(L)^{-2j/d} \qquad
        \text{yarn: } (1 - \gamma_j)\,\theta_j + \gamma_j\,\theta_j / s

    where :math:`\gamma_j` ramps linearly from 0 (pairs turning more than ``beta_fast``
    times over :math:`L_0`) to 1 (fewer than ``beta_slow`` turns), YaRN Eq. (18)-(20).

    Args:
        dim: Rotary channels (even).
        base: RoPE base ``b``.
        scaling: A :class:`FrequencyScaling`, mapping or kind name.
        length: Current context length ``L``, a scalar tensor; used (and required) only by
            ``dynamic`` scaling.

    Returns:
        ``(dim // 2,)`` float32 (float64 internally).

    Raises:
        ValueError: If ``dynamic`` scaling is asked for without ``length``.
    """
    s = FrequencyScaling.coerce(scaling)
    inv = rotary_inv_freq(dim, base).double()
    if s.kind == "none" or (s.factor == 1.0 and s.kind != "dynamic"):
        return inv.float()
    if s.kind == "linear":
        return (inv / s.factor).float()
    if s.kind == "ntk":
        exponent = dim / (dim - 2) if dim > 2 else 1.0
        return rotary_inv_freq(dim, base * s.factor**exponent)
    if s.kind == "dynamic":
        if length is None:
            raise ValueError("dynamic NTK scaling needs the current context length")
        assert s.original_length is not None
        new_base = dynamic_ntk_base(base, dim, s.factor, s.original_length, length)
        exponents = torch.arange(0, dim, 2, dtype=torch.float64, device=new_base.device) / dim
        return (1.0 / new_base**exponents).float()
    ramp = _yarn_ramp(dim, base, s)
    return ((1 - ramp) * inv + ramp * inv / s.factor).float()
