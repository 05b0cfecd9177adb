r"""Longer text contexts for open_clip CLIP models (extra ``clip``).

Upgrade the text tower of a (pretrained) open_clip ``CLIP`` / ``CustomTextCLIP`` from 77 to
``N`` tokens with one of three methods:

* ``"linear"``: the absolute position table resampled (open_clip's own resize);
* ``"kps"``: Long-CLIP knowledge-preserved stretching ("Long-CLIP: Unlocking the Long-Text
  Capability of CLIP", Zhang et al., ECCV 2024, arXiv:2403.15378);
* ``"rope"``: TULIP relative rotary positions ("TULIP: Token-length Upgraded CLIP",
  Najdenkoska et al., ICLR 2025, arXiv:2410.10034), followed by distillation from the original
  tower (:func:`distill_text_tower`) and long-caption fine-tuning (:func:`finetune_long_captions`).

Quick start::

    import open_clip
    from multipos.clip import save_upgraded, upgrade_text_context

    model = open_clip.create_model("ViT-B-32", pretrained="/path/to/weights.bin")
    model = upgrade_text_context(model, "kps", context_length=248)
    tokens = open_clip.get_tokenizer("ViT-B-32", context_length=248)(["a long caption ..."])
    features = model.encode_text(tokens)
    save_upgraded(model, "out", open_clip.get_model_config("ViT-B-32"))
    same = open_clip.create_model("local-dir:out")  # identical embeddings, any method

Importing this package installs :func:`register_open_clip`: ``open_clip.create_model``
recognises directories written by :func:`save_upgraded` (``"rope"`` ones included, which plain
open_clip cannot build) and passes every other call to open_clip unchanged.

The command ``multipos-clip-upgrade`` (:mod:`multipos.clip.upgrade_cli`) runs the whole
recipe. Nothing here downloads weights unless a pretrained tag is asked for.

Modules, in import order: ``spec`` (:class:`TextContextSpec`), ``stretch`` (table
stretching), ``text_rope`` (rotary attention blocks), ``towers`` (the 1..N-token classes),
``upgrade`` (:func:`upgrade_text_context`), ``checkpoint`` (:func:`save_upgraded`,
:func:`read_spec`), ``factory`` (the open_clip loader), ``evaluation``, ``data`` (caption and
pair readers), ``distributed`` (``torchrun`` setup), ``loop`` (the shared training loop,
:class:`StageConfig`), ``stages`` (TULIP distillation and fine-tuning), ``upgrade_cli``.
"""

from multipos.clip.checkpoint import read_spec, save_upgraded
from multipos.clip.data import read_captions, read_pairs
from multipos.clip.distributed import DistInfo, init_distributed
from multipos.clip.evaluation import evaluate_pairs, retrieval_recall, short_caption_preservation
from multipos.clip.factory import (
    load_upgraded,
    open_clip_registered,
    register_open_clip,
    unregister_open_clip,
)
from multipos.clip.loop import StageConfig
from multipos.clip.spec import Method, TextContextSpec, text_context_spec
from multipos.clip.stages import distill_text_tower, finetune_long_captions, text_parameters
from multipos.clip.stretch import kps_stretch, linear_stretch, stretch_positional_table
from multipos.clip.text_rope import RotaryAttention, rotary_text_blocks
from multipos.clip.towers import (
    LongTextCLIP,
    LongTextCustomCLIP,
    LongTextTransformer,
    trim_tokens,
)
from multipos.clip.upgrade import upgrade_text_context

__all__ = [
    "DistInfo",
    "LongTextCLIP",
    "LongTextCustomCLIP",
    "LongTextTransformer",
    "Method",
    "RotaryAttention",
    "StageConfig",
    "TextContextSpec",
    "distill_text_tower",
    "evaluate_pairs",
    "finetune_long_captions",
    "init_distributed",
    "kps_stretch",
    "linear_stretch",
    "load_upgraded",
    "open_clip_registered",
    "read_captions",
    "read_pairs",
    "read_spec",
    "register_open_clip",
    "retrieval_recall",
    "rotary_text_blocks",
    "save_upgraded",
    "short_caption_preservation",
    "stretch_positional_table",
    "text_context_spec",
    "text_parameters",
    "trim_tokens",
    "unregister_open_clip",
    "upgrade_text_context",
]

register_open_clip()
