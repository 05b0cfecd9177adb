r"""Upgrade the text tower of an open_clip CLIP model to a longer context.

Three methods, chosen by name:

* ``"linear"``: the absolute table is resampled to ``N`` rows (:func:`linear_stretch`);
* ``"kps"``: Long-CLIP knowledge-preserved stretching (:func:`kps_stretch`; Zhang et al.,
  ECCV 2024, arXiv:2403.15378);
* ``"rope"``: TULIP relative positions (Najdenkoska et al., ICLR 2025, arXiv:2410.10034): the
  table is dropped and every text block rotates q and k (:class:`RotaryAttention`).

The upgraded model reads token tensors of any length ``1 <= L <= N``
(:mod:`multipos.clip.towers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from torch import nn

from multipos.clip.spec import METHODS, Method, TextContextSpec, text_context_spec
from multipos.clip.stretch import stretch_positional_table
from multipos.clip.text_rope import rotary_text_blocks
from multipos.clip.towers import (
    LongTextCLIP,
    LongTextCustomCLIP,
    LongTextTransformer,
    causal_mask,
    check_upgradable,
    text_tower,
)
from multipos.frequencies import FrequencyScaling
from multipos.rotary import Layout

__all__ = ["install_text_context", "upgrade_text_context"]


def install_text_context(model: Any, spec: TextContextSpec) -> nn.Module:
    """Structural part of an upgrade: rotary blocks or causal mask, classes and ``spec``.

    No learned value changes except dropping the positional table for ``"rope"``; a
    ``"linear"``/``"kps"`` table must already have ``N`` rows. Used by
    :func:`upgrade_text_context` and by the loader, which installs a saved spec on a freshly
    built model before its weights load.

    Args:
        model: open_clip ``CLIP`` or ``CustomTextCLIP`` (changed in place).
        spec: The spec to install.

    Returns:
        The same model object, now a :class:`LongTextCLIP` / :class:`LongTextCustomCLIP`.

    Raises:
        ValueError: If a ``"linear"``/``"kps"`` table does not have ``spec.context_length`` rows.
    """
    tower: Any = text_tower(model)
    device = tower.token_embedding.weight.device
    n = spec.context_length
    if spec.method == "rope":
        head_dim = tower.transformer.width // _num_heads(tower)
        rotary = spec.rotary(head_dim).to(device)
        rotary_text_blocks(tower.transformer.resblocks, rotary, context_length=n)
        del tower.positional_embedding
        tower.positional_embedding = None
        # Causality lives in RotaryAttention (SDPA is_causal), so no mask tensor is passed.
        tower.attn_mask = None
    else:
        if tower.positional_embedding.shape[0] != n:
            raise ValueError(
                f"positional table has {tower.positional_embedding.shape[0]} rows, expected {n}"
            )
        tower.attn_mask = causal_mask(n, device)
    if tower is model:
        model.__class__ = LongTextCLIP
    else:
        model.__class__ = LongTextCustomCLIP
        tower.__class__ = LongTextTransformer
        tower.num_pos = tower.context_length = n
        tower.text_context_spec = spec
    model.context_length = n
    model.text_context_spec = spec
    return cast(nn.Module, model)


def _num_heads(tower: Any) -> int:
    attn = tower.transformer.resblocks[0].attn
    return int(attn.num_heads)


def upgrade_text_context(
    model: nn.Module,
    method: Method = "rope",
    context_length: int = 248,
    *,
    keep: int = 20,
    stretch: float | None = None,
    base: float = 10000.0,
    layout: Layout = "interleaved",
    scaling: FrequencyScaling | Mapping[str, Any] | str | None = None,
) -> nn.Module:
    r"""Upgrade the text tower of an open_clip ``CLIP``/``CustomTextCLIP`` to ``N`` tokens.

    Methods: ``"linear"`` (table resampled, :func:`linear_stretch`), ``"kps"`` (Long-CLIP,
    "Long-CLIP: Unlocking the Long-Text Capability of CLIP", Zhang et al., ECCV 2024,
    arXiv:2403.15378: :math:`P'_i = P_i` for :math:`i <` ``keep``, the rest interpolated at
    :math:`s_i = k + (i - k)/r`, :func:`kps_stretch`), ``"rope"`` (TULIP, "TULIP: Token-length
    Upgraded CLIP", Najdenkoska et al., ICLR 2025, arXiv:2410.10034: table removed, q and k of
    every block rotated, :class:`RotaryAttention`). The model is changed **in place** and
    returned (``copy.deepcopy`` it first to keep the original, e.g. as a distillation teacher).
    Its state-dict keys are unchanged apart from ``positional_embedding`` (resized, or removed
    for ``"rope"``), so the original weights still load into the rope tower strictly.

    Afterwards ``encode_text`` accepts ``(B, L)`` ids with ``1 <= L <= N``; tokenize with
    ``open_clip.get_tokenizer(name, context_length=N)``.

    Args:
        model: open_clip ``CLIP`` or ``CustomTextCLIP`` with a causal, end-token-pooled text
            tower (OpenAI/LAION CLIP). Not upgraded before.
        method: ``"linear"``, ``"kps"`` or ``"rope"``.
        context_length: New context length ``N`` (>= the current one; default 248).
        keep: ``"kps"``: rows kept bit for bit (Long-CLIP: 20).
        stretch: ``"kps"``: stretch factor ``r``; ``None`` = ``(N - keep) / (L0 - keep)``.
        base: ``"rope"``: rotary base (TULIP: 10000).
        layout: ``"rope"``: ``"interleaved"`` (TULIP's complex-pair layout) or ``"half"``.
        scaling: ``"rope"``: frequency scaling (``FrequencyScaling``, mapping or kind name);
            dynamic NTK is evaluated at ``N``.

    Returns:
        The same model object, now a :class:`LongTextCLIP` / :class:`LongTextCustomCLIP`.

    Raises:
        TypeError: If ``model`` is not an open_clip ``CLIP``/``CustomTextCLIP``.
        ValueError: For SigLIP-style towers (bidirectional, ``last`` pooling), class-token
            towers, an already upgraded model, an unknown method/layout, or ``N`` shorter than
            the current context.
    """
    if text_context_spec(model) is not None:
        raise ValueError("model is already upgraded; upgrade a copy of the original model")
    tower = check_upgradable(model)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    original = int(tower.positional_embedding.shape[0])
    spec = TextContextSpec(
        method=method,
        context_length=context_length,
        original_length=original,
        keep=keep,
        stretch=stretch,
        base=base,
        layout=layout,
        scaling=FrequencyScaling.coerce(scaling),
    )
    if method in ("linear", "kps"):
        table = tower.positional_embedding
        new = stretch_positional_table(
            table.detach(), context_length, method, keep=keep, stretch=stretch
        )
        tower.positional_embedding = nn.Parameter(new, requires_grad=table.requires_grad)
    return install_text_context(model, spec)
