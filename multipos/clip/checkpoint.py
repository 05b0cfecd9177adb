r"""Save an upgraded open_clip model as a ``local-dir`` checkpoint and read its spec back.

The directory layout is open_clip's own (``open_clip_config.json`` +
``open_clip_pytorch_model.bin``); the :class:`~multipos.clip.TextContextSpec` rides along in the
config under the key ``"multipos"``, where :mod:`multipos.clip.factory` finds it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from multipos.clip.spec import TextContextSpec, text_context_spec

__all__ = ["CONFIG_NAME", "SPEC_KEY", "WEIGHTS_NAME", "read_spec", "save_upgraded"]

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_pytorch_model.bin"
SPEC_KEY = "multipos"


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
    """The JSON config of a saved directory and its :class:`TextContextSpec` (if any).

    Raises:
        FileNotFoundError: If the directory has no ``open_clip_config.json``.
        TypeError: If the stored spec has unknown fields.
    """
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}")
    config = json.loads(path.read_text())
    stored = config.get(SPEC_KEY, {}).get("text_context")
    return config, (TextContextSpec.from_dict(stored) if stored is not None else None)
