r"""HiRoPE in a Hugging Face Llama-family causal LM, training-free (extra ``hf``).

From "HiRoPE: Length Extrapolation for Code Models Using Hierarchical Position" (Zhang et al.,
ACL 2024, arXiv:2403.19115): the model's own rotary frequencies are kept; only the position
each channel group turns by changes (:mod:`multipos.llm.hirope`). :func:`apply_hirope` adds
forward pre-hooks, no parameters, to a loaded model; afterwards

``model(input_ids, position_ids=positions)`` with ``positions: (levels, B, L)``

runs HiRoPE, and 2-D ``position_ids`` (or none) run the unmodified model. The mask and cache
bookkeeping of the model see flat positions ``past + 0..L-1``, so multi-level positions never
look like packed sequences to the mask builder. With ``window`` the model's attention function
is replaced by an eager one that merges flat-RoPE logits (``|i - j| < window``) with HiRoPE
logits (:func:`multipos.llm.window_logits`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from multipos.llm.hf_rotary import HFRotaryEmbedding, install_continuation
from multipos.llm.hirope import hirope_sections, window_logits
from multipos.rotary import apply_rotary

__all__ = ["HiRoPEHandle", "apply_hirope", "hirope_continuation"]

WINDOW_ATTENTION = "multipos_hirope_window"


@dataclass(frozen=True)
class _HiRoPEInputs:
    """Per-forward tables handed to every attention layer through the model's kwargs."""

    cos: Tensor  # (B, L, D) hierarchical
    sin: Tensor
    shift_cos: Tensor  # (B, L, D) rotation from hierarchical to flat angles (window only)
    shift_sin: Tensor
    flat: Tensor  # (B, L) flat positions
    window: int


class HiRoPEHandle:
    """What :func:`apply_hirope` installed; ``remove()`` restores the model exactly."""

    def __init__(
        self, model: Any, hooks: list[Any], restore_attention: str | None, levels: int
    ) -> None:
        self.model = model
        self.levels = levels
        self._hooks = hooks
        self._restore_attention = restore_attention

    def remove(self) -> None:
        """Remove the hooks, the window attention function and the ``generate()`` continuation."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if "_update_model_kwargs_for_generation" in vars(self.model):
            del self.model._update_model_kwargs_for_generation  # back to the class's method
        if self._restore_attention is not None:
            self.model.config._attn_implementation = self._restore_attention
            self._restore_attention = None


def hirope_continuation(position_ids: Tensor, num_new: int) -> Tensor:
    r"""HiRoPE positions of ``num_new`` generated tokens: they extend the last block.

    The token level counts on, the higher levels stay where the prompt ended (a generated
    token cannot know that it opens a new block):

    .. math::
        p_{L + k} = (p^{(0)}_L + k, p^{(1)}_L, \ldots), \qquad k = 1, \dots, n.

    ``(B, L)`` flat positions continue as ``last + k`` (``transformers``' own rule).

    Args:
        position_ids: ``(levels, B, L)`` or ``(B, L)``.
        num_new: Generated tokens ``n``.

    Returns:
        ``(levels, B, n)`` or ``(B, n)``.
    """
    last = position_ids[..., -1:]
    steps = torch.arange(1, num_new + 1, dtype=position_ids.dtype, device=position_ids.device)
    out = last.expand(*position_ids.shape[:-1], num_new).clone()
    if position_ids.dim() == 3:
        out[0] += steps
    else:
        out += steps
    return out


def _decoder(model: nn.Module) -> Any:
    inner = getattr(model, "model", model)
    if not (hasattr(inner, "rotary_emb") and hasattr(inner, "layers")):
        raise TypeError(
            f"apply_hirope needs a Llama-family model (with .model.rotary_emb and .model.layers "
            f"or .rotary_emb and .layers), got {type(model).__name__}"
        )
    return inner


def _check_sections(sections: Sequence[int] | None, pairs: int, levels: int) -> list[int]:
    if sections is None:
        return hirope_sections(2 * pairs, levels)
    out = [int(s) for s in sections]
    if len(out) != levels or any(s < 0 for s in out) or sum(out) != pairs:
        raise ValueError(
            f"sections must be {levels} non-negative channel-pair counts summing to "
            f"head_dim // 2 = {pairs}, got {list(sections)}"
        )
    return out


def _half_tables(angles: Tensor) -> tuple[Tensor, Tensor]:
    # (B, L, D/2) -> (B, L, D) in the "half" pairing of Hugging Face Llama
    full = torch.cat((angles, angles), dim=-1)
    return full.cos(), full.sin()


def _register_window_attention() -> None:
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    ALL_ATTENTION_FUNCTIONS.register(WINDOW_ATTENTION, _window_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(WINDOW_ATTENTION, eager_mask)


def _window_attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    multipos_hirope: _HiRoPEInputs | None = None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """Eager attention with HiRoPE's window; plain eager attention without HiRoPE inputs."""
    groups = getattr(module, "num_key_value_groups", 1)
    key = key.repeat_interleave(groups, dim=1)  # (B, Hkv, S, D) -> (B, H, S, D)
    value = value.repeat_interleave(groups, dim=1)
    logits = torch.matmul(query, key.transpose(2, 3)) * scaling
    if multipos_hirope is not None and multipos_hirope.window > 0:
        tables = multipos_hirope
        if key.shape[-2] != tables.flat.shape[-1] or query.shape[-2] != key.shape[-2]:
            raise ValueError(
                "HiRoPE's window needs a full-sequence forward (no KV cache): queries "
                f"{query.shape[-2]}, keys {key.shape[-2]}, positions {tables.flat.shape[-1]}"
            )
        # q, k arrive rotated by hierarchical angles; one more rotation makes them flat.
        cos = tables.shift_cos.unsqueeze(1).to(query.dtype)
        sin = tables.shift_sin.unsqueeze(1).to(query.dtype)
        near = torch.matmul(
            apply_rotary(query, cos, sin, "half"),
            apply_rotary(key, cos, sin, "half").transpose(2, 3),
        )
        flat = tables.flat.unsqueeze(1)  # (B, 1, L)
        logits = window_logits(near * scaling, logits, flat, flat, tables.window)
    if attention_mask is not None:
        logits = logits + attention_mask[..., : key.shape[-2]]
    weights = nn.functional.softmax(logits, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (B, L, H, D)
    return out, weights


def apply_hirope(
    model: nn.Module,
    *,
    levels: int = 2,
    sections: Sequence[int] | None = None,
    window: int | None = None,
) -> HiRoPEHandle:
    r"""Make a Llama-family model take HiRoPE positions ``(levels, B, L)``, training-free.

    From "HiRoPE: Length Extrapolation for Code Models Using Hierarchical Position" (Zhang et
    al., ACL 2024, arXiv:2403.19115): pair ``j`` of the model's rotary spectrum
    :math:`\theta_j` (its own ``inv_freq``, scalings included) turns by the position of the
    level whose channel group holds it, :math:`\phi_j = p_{a(j)} \theta_j`; the first
    ``sections[0]`` (highest-frequency) pairs follow the token level. No parameter is added
    and the weights are untouched. Works on ``transformers.LlamaForCausalLM`` and models with
    the same layout (``.model.rotary_emb``, ``.model.layers[i].self_attn``, "half" pairing).
    The tables come from :class:`multipos.llm.HFRotaryEmbedding` built from the model's
    rotary module with one section per level.

    Positions come in through ``position_ids`` of shape ``(levels, B, L)`` (from
    :func:`multipos.llm.hirope_positions`, stacked over the batch); the model's own masks and
    caches see the flat positions ``past + 0..L-1``. A cached step (``past_key_values``) takes
    the new tokens' hierarchical positions ``(levels, B, L_new)``. ``generate(input_ids,
    position_ids=positions)`` continues the positions with :func:`hirope_continuation`
    (generated tokens extend the last block; the continuation hook of
    :mod:`multipos.llm.hf_rotary`).

    Args:
        model: A loaded Llama-family model.
        levels: Hierarchy levels of the positions (2 or 3; see ``hirope_positions``).
        sections: Channel pairs per level, summing to ``head_dim // 2``; default an even split.
        window: Flat-RoPE window in tokens (the paper's window mechanism). ``None``/``0``:
            HiRoPE on every pair and the model's own attention kernel; ``> 0``: an eager
            attention function that needs full-sequence forwards (no cache).

    Returns:
        :class:`HiRoPEHandle`; ``handle.remove()`` undoes everything.

    Raises:
        TypeError: If the model is not Llama-shaped.
        ValueError: On bad ``sections``/``levels``/``window``, a rotary type whose frequencies
            depend on the length (``dynamic``, ``longrope``), or at forward time on positions
            whose shape is not ``(levels, B, L)``.
    """
    decoder = _decoder(model)
    if isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= 3:
        raise ValueError(f"levels must be 2 or 3, got {levels!r}")
    if window is not None and (
        isinstance(window, bool) or not isinstance(window, int) or window < 0
    ):
        raise ValueError(f"window must be None or a non-negative int, got {window!r}")
    pairs = int(decoder.rotary_emb.inv_freq.shape[-1])
    split = _check_sections(sections, pairs, levels)
    # The model's own frequencies and attention scaling, one channel section per level.
    rope = HFRotaryEmbedding.from_module(decoder.rotary_emb, sections=split)
    size = int(window or 0)

    def model_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        positions = kwargs.get("position_ids")
        if positions is None or positions.dim() != 3:
            return None
        embeds = kwargs.get("inputs_embeds")
        ids = kwargs.get("input_ids", args[0] if args else None)
        tokens = embeds if embeds is not None else ids
        if not isinstance(tokens, Tensor):
            raise ValueError("HiRoPE positions need input_ids or inputs_embeds passed by keyword")
        batch, length = tokens.shape[:2]
        if positions.shape[0] != levels or positions.shape[-1] != length:
            raise ValueError(
                f"HiRoPE positions must be (levels={levels}, B, L={length}), got "
                f"{tuple(positions.shape)}"
            )
        cache = kwargs.get("past_key_values")
        past = cache.get_seq_length() if cache is not None else 0
        device = positions.device
        flat = (torch.arange(length, device=device) + past).expand(batch, length)
        if rope.inv_freq.device != device:
            rope.to(device)
        pos = positions.expand(levels, batch, length)
        cos, sin = rope(torch.empty(0, device=device), pos)  # (B, L, D) float32
        # rotation from hierarchical to flat angles (flat (B, L): every level reads it)
        shift_cos = shift_sin = cos[:0]  # only the window needs the flat rotation
        if size > 0:
            shift_cos, shift_sin = _half_tables(rope.angles(flat) - rope.angles(pos))
        kwargs["position_ids"] = flat
        kwargs["multipos_hirope"] = _HiRoPEInputs(cos, sin, shift_cos, shift_sin, flat, size)
        return args, kwargs

    def attention_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        tables = kwargs.get("multipos_hirope")
        if tables is None:
            return None
        dtype = kwargs["hidden_states"].dtype if "hidden_states" in kwargs else args[0].dtype
        kwargs["position_embeddings"] = (tables.cos.to(dtype), tables.sin.to(dtype))
        return args, kwargs

    hooks = [decoder.register_forward_pre_hook(model_hook, with_kwargs=True)]
    for layer in decoder.layers:
        hooks.append(layer.self_attn.register_forward_pre_hook(attention_hook, with_kwargs=True))
    restore = None
    config: Any = getattr(model, "config", None)
    if size > 0:
        if config is None:
            raise TypeError("window needs a transformers model with a config")
        _register_window_attention()
        restore = str(config._attn_implementation)
        config._attn_implementation = WINDOW_ATTENTION
    if hasattr(model, "_update_model_kwargs_for_generation"):
        install_continuation(model, hirope_continuation)
    return HiRoPEHandle(model, hooks, restore, levels)
