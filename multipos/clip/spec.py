r"""The position spec of an upgraded open_clip text tower: method, lengths and rotary options.

A :class:`TextContextSpec` is everything needed to rebuild an upgraded tower from the original
architecture: it is set on the model by :func:`~multipos.clip.upgrade_text_context` and stored
in the saved ``open_clip_config.json`` by :func:`~multipos.clip.save_upgraded`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from torch import nn

from multipos.frequencies import FrequencyScaling
from multipos.rotary import LAYOUTS, Layout, RotaryEmbedding

__all__ = ["METHODS", "Method", "TextContextSpec", "text_context_spec"]

Method = Literal["linear", "kps", "rope"]
METHODS: tuple[str, ...] = get_args(Method)


@dataclass(frozen=True)
class TextContextSpec:
    """Everything needed to rebuild an upgraded text tower; stored in ``open_clip_config.json``.

    Attributes:
        method: ``"linear"``, ``"kps"`` or ``"rope"``.
        context_length: New context length ``N``.
        original_length: Context length ``L0`` of the tower before the upgrade.
        keep: ``"kps"``: rows copied unchanged (Long-CLIP: 20).
        stretch: ``"kps"``: stretch factor; ``None`` = ``(N - keep) / (L0 - keep)``.
        base: ``"rope"``: rotary base.
        layout: ``"rope"``: ``"interleaved"`` (TULIP, Meta Llama) or ``"half"``.
        scaling: ``"rope"``: frequency scaling (kind none/linear/ntk/dynamic/yarn and fields).

    Raises:
        ValueError: For an unknown method or layout, a non-positive length, ``N < L0`` or a
            rotary base not above 1.
    """

    method: Method
    context_length: int
    original_length: int
    keep: int = 20
    stretch: float | None = None
    base: float = 10000.0
    layout: Layout = "interleaved"
    scaling: FrequencyScaling = field(default_factory=FrequencyScaling)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        for name in ("context_length", "original_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.context_length < self.original_length:
            raise ValueError(
                f"context_length {self.context_length} must be at least the original "
                f"{self.original_length}"
            )
        if not self.base > 1:
            raise ValueError(f"rotary base must be > 1, got {self.base}")
        object.__setattr__(self, "scaling", FrequencyScaling.coerce(self.scaling))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the scaling as its field dict)."""
        out = asdict(self)
        out["scaling"] = self.scaling.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextContextSpec:
        """Inverse of :meth:`to_dict`.

        Raises:
            TypeError: On unknown keys.
        """
        fields = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - fields)
        if unknown:
            raise TypeError(f"unknown text-context field(s) {unknown}; valid: {sorted(fields)}")
        return cls(**dict(data))

    def rotary(self, head_dim: int) -> RotaryEmbedding:
        """The rotary module of a ``"rope"`` tower with heads of ``head_dim`` channels."""
        return RotaryEmbedding(head_dim, base=self.base, layout=self.layout, scaling=self.scaling)


def text_context_spec(model: nn.Module) -> TextContextSpec | None:
    """The :class:`TextContextSpec` of an upgraded model, or ``None``."""
    spec = getattr(model, "text_context_spec", None)
    return spec if isinstance(spec, TextContextSpec) else None
