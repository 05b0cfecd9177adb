r"""The rotary module and the hooks that put float, multi-axis positions into Hugging Face LMs.

Hugging Face decoder models compute ``(cos, sin) = model.rotary_emb(hidden, position_ids)``
once per forward and hand them to every attention layer. :class:`HFRotaryEmbedding` is a
drop-in replacement that accepts any float positions, on one axis ``(B, L)`` or on ``A``
axes ``(A, B, L)`` mapped to channel sections, and keeps its frequencies and angles in
float32 whatever the model dtype. The two hooks below fix the places where ``transformers``
assumes integer, one-axis positions: packed-sequence detection from ``position_ids`` and the
``+1`` continuation of ``position_ids`` in ``generate()``. Imports torch only; the adapters
(:mod:`multipos.llm.hf_llama`, :mod:`multipos.llm.hf_qwen2_vl`) apply them to a model.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Continuation", "HFRotaryEmbedding", "v2pe_continuation"]

#: ``(position_ids (..., B, L), num_new) -> (..., B, num_new)``: positions of generated tokens.
Continuation = Callable[[Tensor, int], Tensor]

# Rotary types whose frequencies depend on the current length: recomputed per forward by
# transformers, which a fixed-frequency module cannot reproduce.
_LENGTH_DEPENDENT = ("dynamic", "longrope")


class HFRotaryEmbedding(nn.Module):
    r"""Rotary ``(cos, sin)`` for Hugging Face attention layers from arbitrary float positions.

    RoFormer's rotation (Su et al., 2021, arXiv:2104.09864, Eq. 34) with the sectioned
    multi-axis form of Qwen2-VL M-RoPE (Wang et al., 2024, arXiv:2409.12191): the
    ``D / 2`` frequency slots are split into contiguous ``sections``, slot ``j`` of section
    ``a`` turns by

    .. math::
        \phi_j = p_a\,\theta_j,\qquad \theta_j = b^{-2j/D}\ \text{(or the model's scaled
        frequencies)},

    and the tables are laid out ``"half"`` (pairs ``(i, i + D/2)``, as every Hugging Face
    ``rotate_half`` expects), multiplied by the model's ``attention_scaling``. With one axis
    this computes exactly what the model's own rotary module computes from the same positions
    (bit for bit), so integer positions reproduce the unmodified model.

    Plugging another scheme in: build the positions your scheme defines, ``(A, B, L)`` with
    one row per axis, and a module with ``sections`` giving the frequency slots of each axis
    (e.g. HiRoPE's token and function levels on two sections, ``sections=(s0, s1)``); apply
    it with :func:`~multipos.llm.apply_llama_positions` ``(model, rotary=module)`` and pass
    the positions as ``position_ids``. A scheme that computes angles differently can subclass
    and override :meth:`angles`; anything with ``forward(x, position_ids) -> (cos, sin)`` in
    the model's layout works in place of this class.

    Frequencies are a float32 buffer that survives ``model.to(torch.bfloat16)`` (casting the
    module restores the float32 values), and angles are formed from float32 positions
    (float64 positions stay float64): at position 10^5, bf16 positions would be off by
    hundreds. The finished tables are cast once to the dtype of ``x``.

    Args:
        inv_freq: ``(D / 2,)`` inverse frequencies of the rotating channels.
        sections: Frequency slots per position axis, summing to ``D / 2``; default: one axis.
        attention_scaling: Factor on cos/sin (YaRN / LongRoPE temperature; 1 otherwise).

    Shape:
        ``forward(x, position_ids)`` with ``position_ids: (B, L)`` or ``(A, B, L)`` (a single
        ``(1, B, L)`` or ``(B, L)`` row is used on every axis) returns ``(cos, sin)``, each
        ``(B, L, D)`` in ``x.dtype``.

    Raises:
        ValueError: If ``inv_freq`` is not 1-D, ``sections`` do not sum to ``D / 2``, or
            ``position_ids`` have another number of axes than ``sections``.
        TypeError: If ``inv_freq`` is not floating point.
    """

    inv_freq: Tensor
    axis_of_slot: Tensor

    def __init__(
        self,
        inv_freq: Tensor,
        *,
        sections: Sequence[int] | None = None,
        attention_scaling: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(inv_freq, Tensor) or inv_freq.dim() != 1:
            shape = tuple(inv_freq.shape) if isinstance(inv_freq, Tensor) else inv_freq
            raise ValueError(f"inv_freq must be a (D/2,) tensor, got {shape}")
        if not inv_freq.is_floating_point():
            raise TypeError(f"inv_freq must be floating point, got {inv_freq.dtype}")
        slots = inv_freq.shape[0]
        self.sections = [slots] if sections is None else [int(s) for s in sections]
        if any(s < 0 for s in self.sections) or sum(self.sections) != slots:
            raise ValueError(
                f"sections {self.sections} must be non-negative slot counts summing to "
                f"D/2 = {slots} (the length of inv_freq)"
            )
        self.num_axes = len(self.sections)
        self.attention_scaling = float(attention_scaling)
        reference = inv_freq.detach().to(torch.float32).clone()
        # Kept outside the buffers so that a dtype cast of the module cannot touch it.
        self._reference = reference.cpu()
        axis = torch.repeat_interleave(
            torch.arange(self.num_axes), torch.tensor(self.sections, dtype=torch.long)
        )
        self.register_buffer("inv_freq", reference, persistent=False)
        self.register_buffer("axis_of_slot", axis.to(reference.device), persistent=False)

    @classmethod
    def from_module(
        cls, rotary: nn.Module, *, sections: Sequence[int] | None = None
    ) -> HFRotaryEmbedding:
        """The same frequencies and scaling as a model's own rotary module.

        Reads ``original_inv_freq`` (or ``inv_freq``) and ``attention_scaling`` from a
        ``transformers`` rotary module (``LlamaRotaryEmbedding``, ``Qwen2VLRotaryEmbedding``,
        ...). If the model was already cast to bf16/fp16, the float32 frequencies are
        recomputed from the module's config by the function ``transformers`` itself uses.

        Raises:
            TypeError: If ``rotary`` has no ``inv_freq`` buffer.
            ValueError: For rotary types whose frequencies depend on the length (``dynamic``,
                ``longrope``), which this fixed-frequency module does not reproduce.
        """
        rope_type = getattr(rotary, "rope_type", "default")
        if rope_type in _LENGTH_DEPENDENT:
            raise ValueError(
                f"rope_type {rope_type!r} recomputes its frequencies from the sequence length; "
                f"supported: the fixed-frequency types (not {_LENGTH_DEPENDENT})"
            )
        inv_freq = getattr(rotary, "original_inv_freq", None)
        if inv_freq is None:
            inv_freq = getattr(rotary, "inv_freq", None)
        if not isinstance(inv_freq, Tensor):
            raise TypeError(
                f"rotary must be a transformers rotary module with an inv_freq buffer, got "
                f"{type(rotary).__name__}"
            )
        if inv_freq.dtype not in (torch.float32, torch.float64):
            inv_freq = _recompute_inv_freq(rotary, str(rope_type)).to(inv_freq.device)
        scaling = float(getattr(rotary, "attention_scaling", 1.0))
        return cls(inv_freq, sections=sections, attention_scaling=scaling)

    def _apply(self, fn: Any, recurse: bool = True) -> HFRotaryEmbedding:
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        if self.inv_freq.dtype not in (torch.float32, torch.float64):
            self.inv_freq = self._reference.to(self.inv_freq.device)
        return self

    def extra_repr(self) -> str:
        return f"sections={self.sections}, attention_scaling={self.attention_scaling:g}"

    def angles(self, position_ids: Tensor) -> Tensor:
        """Rotation angle of every frequency slot, ``(B, L, D / 2)``, float32 or float64."""
        pos = position_ids
        if pos.dim() == 2:
            pos = pos.unsqueeze(0)
        if pos.dim() != 3 or pos.shape[0] not in (1, self.num_axes):
            raise ValueError(
                f"position_ids must be (B, L) or (A={self.num_axes}, B, L) for sections "
                f"{self.sections}, got {tuple(position_ids.shape)}"
            )
        wide = torch.float64 if pos.dtype == torch.float64 else torch.float32
        pos = pos.to(wide)
        inv_freq = self.inv_freq.to(device=pos.device, dtype=wide)
        if self.num_axes == 1 or pos.shape[0] == 1:
            return pos[0].unsqueeze(-1) * inv_freq
        # (A, B, L) -> (B, L, A) -> (B, L, D/2): every slot reads its own axis.
        return pos.movedim(0, -1)[..., self.axis_of_slot] * inv_freq

    @torch.no_grad()
    def forward(self, x: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        phi = self.angles(position_ids)
        phi = torch.cat((phi, phi), dim=-1)  # "half" layout: slot j drives channels j, j + D/2
        cos = phi.cos() * self.attention_scaling
        sin = phi.sin() * self.attention_scaling
        return cos.to(x.dtype), sin.to(x.dtype)


def _recompute_inv_freq(rotary: nn.Module, rope_type: str) -> Tensor:
    config: Any = getattr(rotary, "config", None)
    if config is None:
        raise TypeError(
            f"the frequencies of {type(rotary).__name__} are no longer float32 and it has no "
            "config to recompute them from; apply the adapter before casting the model"
        )
    default: Any = getattr(rotary, "compute_default_rope_parameters", None)
    inv_freq: Tensor
    if rope_type == "default" and default is not None:
        inv_freq = default(config)[0]
    else:
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        inv_freq = ROPE_INIT_FUNCTIONS[rope_type](config, None)[0]
    return inv_freq.to(torch.float32)


def v2pe_continuation(position_ids: Tensor, num_new: int) -> Tensor:
    r"""Positions of ``num_new`` generated text tokens after ``position_ids``.

    V2PE's rule (Ge et al., 2024, arXiv:2412.09616) for a text token that follows
    the prompt: the running position is the last position rounded up (an image that ends the
    prompt occupies :math:`\lceil n\delta \rceil` slots), and each text token adds 1; with
    several axes (M-RoPE) the running position is the largest over the axes and the new text
    tokens sit at the same value on every axis (Qwen2-VL):

    .. math::
        p_{L + k} = \lceil \max_a p_{a, L} \rceil + k, \qquad k = 1, \dots, n.

    For integer positions on one axis this is ``transformers``' own ``last + k``.

    Args:
        position_ids: ``(B, L)`` or ``(A, B, L)``; left padding keeps the last column real.
        num_new: Generated tokens ``n``.

    Returns:
        ``(B, n)`` or ``(A, B, n)`` of the dtype of ``position_ids``.
    """
    last = position_ids[..., -1:]
    if position_ids.dim() == 3:
        last = last.amax(dim=0, keepdim=True)
    if last.is_floating_point():
        last = last.ceil()
    steps = torch.arange(1, num_new + 1, dtype=position_ids.dtype, device=position_ids.device)
    out = last + steps
    return out.expand(*position_ids.shape[:-1], num_new).clone()


def install_mask_guard(decoder: nn.Module) -> None:
    """Give ``decoder`` a 2-D all-ones ``attention_mask`` whenever positions come without one.

    ``transformers`` 5 (``masking_utils``) reads packed samples from ``position_ids`` when
    there is neither an attention mask nor a cache: any step other than +1 starts a new
    sample, which every fractional V2PE step (and every multi-axis tensor) would trigger,
    cutting attention at each visual token. An explicit all-ones mask turns the detection off
    and changes nothing else (SDPA still takes its causal fast path). Packed rows are given
    as a 4-D :func:`~multipos.llm.packed_attention_mask` instead. Arguments must be passed
    by keyword, as the ``*ForCausalLM`` wrappers do.
    """
    if getattr(decoder, "_multipos_mask_guard", False):
        return

    def guard(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if kwargs.get("position_ids") is None or kwargs.get("attention_mask") is not None:
            return None
        if kwargs.get("past_key_values") is not None:
            return None
        tokens = kwargs.get("input_ids")
        if tokens is None:
            tokens = kwargs.get("inputs_embeds")
        if tokens is None and args:
            tokens = args[0]
        if not isinstance(tokens, Tensor):
            return None
        batch, length = tokens.shape[:2]
        kwargs["attention_mask"] = torch.ones(batch, length, dtype=torch.long, device=tokens.device)
        return args, kwargs

    decoder.register_forward_pre_hook(guard, with_kwargs=True)
    decoder._multipos_mask_guard = True  # type: ignore[assignment]


def install_continuation(model: nn.Module, continuation: Continuation) -> None:
    """Make ``generate()`` extend ``position_ids`` with ``continuation`` instead of ``+1``.

    ``transformers``' ``GenerationMixin._update_model_kwargs_for_generation`` appends
    ``last + 1`` to the ``position_ids`` it carries between decoding steps; this wraps it on
    the model instance so the generated tokens get ``continuation(previous, n)``.

    Raises:
        TypeError: If ``model`` is not a ``transformers`` generation model.
    """
    if not callable(getattr(type(model), "_update_model_kwargs_for_generation", None)):
        raise TypeError(
            f"model must be a transformers model with generate(), got {type(model).__name__}"
        )
    # A method bound to the model, so that copy.deepcopy(model) rebinds it to the copy.
    model._multipos_continuation = continuation  # type: ignore[assignment]
    bound = types.MethodType(_update_model_kwargs, model)
    setattr(model, "_update_model_kwargs_for_generation", bound)  # noqa: B010


def _update_model_kwargs(
    self: nn.Module, outputs: Any, model_kwargs: dict[str, Any], *args: Any, **kwargs: Any
) -> Any:
    previous = model_kwargs.get("position_ids")
    out = type(self)._update_model_kwargs_for_generation(  # type: ignore[attr-defined]
        self, outputs, model_kwargs, *args, **kwargs
    )
    extended = out.get("position_ids")
    if isinstance(previous, Tensor) and isinstance(extended, Tensor):
        added = extended.shape[-1] - previous.shape[-1]
        if added > 0:
            continuation: Continuation = self._multipos_continuation  # type: ignore[assignment]
            out["position_ids"] = torch.cat((previous, continuation(previous, added)), dim=-1)
    return out
