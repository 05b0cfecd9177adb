r"""Upgrade the text tower of an open_clip CLIP model to a longer context, save it, load it.

Three methods, chosen by name:

* ``"linear"``: the absolute table is resampled to ``N`` rows (:func:`linear_stretch`);
* ``"kps"``: Long-CLIP knowledge-preserved stretching (:func:`kps_stretch`; Zhang et al.,
  ECCV 2024, arXiv:2403.15378);
* ``"rope"``: TULIP relative positions (Najdenkoska et al., ICLR 2025, arXiv:2410.10034): the
  table is dropped and every text block rotates q and k (:class:`RotaryAttention`).

The upgraded tower reads token tensors of any length ``1 <= L <= N``: the causal mask is
sliced to ``L`` and the pooled feature is read at the end token (``argmax`` of the ids, or the
``eos`` id). Because attention is causal and pooling reads the end token, padding after it
never changes an embedding (:func:`trim_tokens` drops it for speed).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CustomTextCLIP
from open_clip.transformer import TextTransformer, text_global_pool
from torch import Tensor, nn

from multipos.clip.stretch import stretch_positional_table
from multipos.clip.text_rope import rotary_text_blocks
from multipos.frequencies import FrequencyScaling
from multipos.rotary import LAYOUTS, Layout, RotaryEmbedding

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "LongTextCLIP",
    "LongTextCustomCLIP",
    "LongTextTransformer",
    "Method",
    "TextContextSpec",
    "read_spec",
    "save_upgraded",
    "text_context_spec",
    "trim_tokens",
    "upgrade_text_context",
]

Method = Literal["linear", "kps", "rope"]
METHODS: tuple[str, ...] = get_args(Method)
POOL_TYPES = ("argmax", "eos")
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_pytorch_model.bin"
SPEC_KEY = "multipos"


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


# --------------------------------------------------------------------------- text tower access


def _tower(model: nn.Module) -> Any:
    """The module that owns the text attributes (the CLIP itself, or ``model.text``)."""
    if type(model) in (CLIP, LongTextCLIP):
        return model
    if type(model) in (CustomTextCLIP, LongTextCustomCLIP):
        text = model.text
        if type(text) not in (TextTransformer, LongTextTransformer):
            raise ValueError(
                f"the text tower is {type(text).__name__}; only open_clip's TextTransformer "
                "(CLIP BPE towers) can be upgraded, not Hugging Face towers"
            )
        return text
    raise TypeError(
        "model must be an open_clip CLIP or CustomTextCLIP (CoCa and subclasses are not "
        f"supported), got {type(model).__name__}"
    )


def _pool_type(tower: Any) -> str:
    return str(getattr(tower, "text_pool_type", None) or tower.pool_type)


def _check_supported(model: nn.Module) -> Any:
    tower = _tower(model)
    pool = _pool_type(tower)
    bidirectional = tower.attn_mask is None and text_context_spec(model) is None
    if bidirectional or pool not in POOL_TYPES:
        raise ValueError(
            "SigLIP-style text towers (bidirectional attention, pool_type 'last'/'first'/'none') "
            "cannot be lengthened: their pooled token depends on the padding, and open_clip "
            "maintainers report zero-shot collapse after a length change (open_clip #1067). "
            f"This tower has attn_mask={'None' if bidirectional else 'causal'}, "
            f"pool_type={pool!r}; supported: causal attention with pool_type in {POOL_TYPES}"
        )
    if getattr(tower, "cls_emb", None) is not None:
        raise ValueError("text towers with a class embedding (CoCa) are not supported")
    return tower


def text_context_spec(model: nn.Module) -> TextContextSpec | None:
    """The :class:`TextContextSpec` of an upgraded model, or ``None``."""
    spec = getattr(model, "text_context_spec", None)
    return spec if isinstance(spec, TextContextSpec) else None


def _causal_mask(length: int, device: torch.device) -> Tensor:
    # open_clip's convention: additive, -inf above the diagonal.
    return torch.full((length, length), float("-inf"), device=device).triu_(1)


def _check_tokens(text: Tensor, context_length: int) -> None:
    if not isinstance(text, Tensor) or text.dim() != 2 or text.dtype.is_floating_point:
        raise ValueError(
            f"text must be integer token ids (B, L), got {getattr(text, 'shape', type(text))}"
        )
    if not 1 <= text.shape[1] <= context_length:
        raise ValueError(
            f"text length must be in [1, {context_length}] for this tower, got shape "
            f"{tuple(text.shape)}; tokenize with context_length={context_length}"
        )


def trim_tokens(text: Tensor, pad_id: int = 0) -> Tensor:
    """Drop trailing columns that are padding in every row, ``(B, L) -> (B, L')``.

    Exact for upgraded towers: attention is causal and pooling reads the end token, so tokens
    after it never reach the embedding. At least one column is kept.
    """
    if text.dim() != 2:
        raise ValueError(f"text must be (B, L), got shape {tuple(text.shape)}")
    used = (text != pad_id).any(dim=0).nonzero()
    length = int(used.max()) + 1 if used.numel() else 1
    return text[:, :length]


def _embed(tower: Any, text: Tensor) -> tuple[Tensor, Tensor | None]:
    """Token ids ``(B, L)``, ``1 <= L <= N`` -> token embeddings (plus the table's first
    ``L`` rows, if any) and the causal mask sliced to ``L`` (``None`` for rotary towers)."""
    _check_tokens(text, tower.text_context_spec.context_length)
    length = text.shape[1]
    x = tower.token_embedding(text).to(tower.transformer.get_cast_dtype())
    if tower.positional_embedding is not None:
        x = x + tower.positional_embedding[:length].to(x.dtype)
    mask = None if tower.attn_mask is None else tower.attn_mask[:length, :length]
    return x, mask


def _encode(tower: Any, text: Tensor) -> Tensor:
    """Token ids ``(B, L)`` -> pooled, projected features ``(B, E)`` of a flattened CLIP."""
    x, mask = _embed(tower, text)
    return _pool_project(tower, tower.transformer(x, attn_mask=mask), text)


def _pool_project(tower: Any, x: Tensor, text: Tensor) -> Tensor:
    """Final norm, end-token pooling and projection of the transformer output ``x``."""
    pooled: Tensor = text_global_pool(
        tower.ln_final(x), text, _pool_type(tower), eos_token_id=tower.text_eos_id
    )
    projection = tower.text_projection
    if isinstance(projection, nn.Linear):
        return cast(Tensor, projection(pooled))
    return pooled if projection is None else pooled @ projection


class LongTextCLIP(CLIP):  # type: ignore[misc]
    """open_clip ``CLIP`` whose ``encode_text`` reads 1..N tokens (set by
    :func:`upgrade_text_context`; never constructed directly)."""

    text_context_spec: TextContextSpec

    def encode_text(self, text: Tensor, normalize: bool = False) -> Tensor:
        x = _encode(self, text)
        return F.normalize(x, dim=-1) if normalize else x

    def forward_intermediates(  # type: ignore[no-untyped-def]
        self,
        image: Tensor | None = None,
        text: Tensor | None = None,
        text_indices: int | list[int] | None = None,
        normalize: bool = True,
        normalize_intermediates: bool = False,
        intermediates_only: bool = False,
        output_logits: bool = False,
        output_logit_scale_bias: bool = False,
        **kwargs,
    ) -> dict[str, Any]:
        """open_clip's ``forward_intermediates`` with the text branch on 1..N tokens."""
        out: dict[str, Any] = super().forward_intermediates(
            image=image,
            text=None,
            normalize=normalize,
            normalize_intermediates=normalize_intermediates,
            intermediates_only=intermediates_only,
            **kwargs,
        )
        if text is not None:
            x, mask = _embed(self, text)
            x, blocks = self.transformer.forward_intermediates(
                x, attn_mask=mask, indices=text_indices
            )
            if normalize_intermediates:
                blocks = [self.ln_final(b) for b in blocks]
            out["text_intermediates"] = blocks
            if not intermediates_only:
                # The blocks ran to the end: pool their output instead of encoding again.
                features = _pool_project(self, x, text)
                out["text_features"] = F.normalize(features, dim=-1) if normalize else features
        if (output_logits or output_logit_scale_bias) and not intermediates_only:
            scale = self.logit_scale.exp()
            if output_logits:
                logits = scale * out["image_features"] @ out["text_features"].T
                if self.logit_bias is not None:
                    logits = logits + self.logit_bias
                out["image_logits"], out["text_logits"] = logits, logits.T
            if output_logit_scale_bias:
                out["logit_scale"] = scale
                if self.logit_bias is not None:
                    out["logit_bias"] = self.logit_bias
        return out


class LongTextCustomCLIP(CustomTextCLIP):  # type: ignore[misc]
    """open_clip ``CustomTextCLIP`` carrying a :class:`TextContextSpec` (see
    :func:`upgrade_text_context`)."""

    text_context_spec: TextContextSpec


class LongTextTransformer(TextTransformer):  # type: ignore[misc]
    """open_clip ``TextTransformer`` whose inputs may be 1..N tokens long (mask and table
    sliced; see :func:`upgrade_text_context`)."""

    text_context_spec: TextContextSpec

    def _embeds(self, text: Tensor) -> tuple[Tensor, Tensor | None]:
        return _embed(self, text)


# --------------------------------------------------------------------------------- upgrading


def _install(model: Any, spec: TextContextSpec) -> nn.Module:
    """Structural part of the upgrade: hooks, mask, class; no change to learned values
    except dropping the table for ``"rope"``."""
    tower: Any = _tower(model)
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
        tower.attn_mask = _causal_mask(n, device)
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
    tower = _check_supported(model)
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
    return _install(model, spec)


# ----------------------------------------------------------------------------- save and load


def save_upgraded(
    model: nn.Module,
    directory: str | Path,
    model_cfg: Mapping[str, Any],
    *,
    preprocess_cfg: Mapping[str, Any] | None = None,
) -> Path:
    """Write an upgraded model as an open_clip ``local-dir`` checkpoint.

    Files: ``open_clip_config.json`` (``model_cfg`` with ``text_cfg.context_length = N``,
    ``preprocess_cfg``, and under the key ``"multipos"`` the whole :class:`TextContextSpec`:
    method, lengths, keep/stretch, rotary base, layout and scaling) and
    ``open_clip_pytorch_model.bin`` (the state dict).

    With :mod:`multipos.clip` imported, ``open_clip.create_model("local-dir:DIR")``
    rebuilds the upgraded model for every method (see
    :func:`~multipos.clip.register_open_clip`), as does
    :func:`~multipos.clip.load_upgraded`. Without it, open_clip alone loads
    ``"linear"``/``"kps"`` directories (inputs padded to ``N``) but not ``"rope"`` ones: it
    builds an absolute-position tower and its strict load stops on the missing
    ``positional_embedding``.

    Args:
        model: An upgraded model.
        directory: Output folder (created).
        model_cfg: The open_clip model config the original was built from, e.g.
            ``open_clip.get_model_config("ViT-B-32")``.
        preprocess_cfg: Image preprocessing config; default: read from the model.

    Returns:
        The directory.

    Raises:
        ValueError: If ``model`` was not upgraded or ``model_cfg`` lacks ``text_cfg``.
    """
    spec = text_context_spec(model)
    if spec is None:
        raise ValueError("model is not upgraded; call upgrade_text_context first")
    if "text_cfg" not in model_cfg or "vision_cfg" not in model_cfg:
        raise ValueError("model_cfg must be an open_clip config with text_cfg and vision_cfg")
    cfg = copy.deepcopy(dict(model_cfg))
    cfg["text_cfg"] = dict(cfg["text_cfg"], context_length=spec.context_length)
    if preprocess_cfg is None:
        preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "model_cfg": cfg,
        "preprocess_cfg": dict(preprocess_cfg),
        SPEC_KEY: {"text_context": spec.to_dict(), "loader": "multipos.clip.load_upgraded"},
    }
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out / WEIGHTS_NAME)
    return out


def read_spec(directory: str | Path) -> tuple[dict[str, Any], TextContextSpec | None]:
    """The JSON config of a saved directory and its :class:`TextContextSpec` (if any)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}")
    config = json.loads(path.read_text())
    stored = config.get(SPEC_KEY, {}).get("text_context")
    return config, (TextContextSpec.from_dict(stored) if stored is not None else None)
