"""Loading upgraded text towers through open_clip's own factory.

open_clip 3.3 has no rotary text tower and no registry for model classes, so a ``"rope"``
directory written by :func:`~multipos.clip.save_upgraded` cannot be rebuilt from its
config alone. :func:`register_open_clip` (run when :mod:`multipos.clip` is imported)
wraps ``open_clip.create_model`` so that ``open_clip.create_model("local-dir:DIR")``, and
``create_model_and_transforms`` / ``create_model_from_pretrained`` which call it, recognise a
directory carrying a multipos position spec: the model is built by open_clip from the stored
``model_cfg``, the spec is installed (rotary attention with the saved base, layout and scaling,
or the stretched table, and variable-length ``encode_text``), and then the weights load
strictly. Every other call goes to open_clip unchanged, except one that would silently build
something else from an upgraded directory's weights file (``pretrained="DIR/..."`` with a
built-in model name): that raises ``ValueError`` naming the ``local-dir:`` to use.

The wrapper is installed on the ``open_clip`` and ``open_clip.factory`` module attributes, so a
name bound earlier with ``from open_clip import create_model`` keeps open_clip's function; use
``open_clip.create_model`` or :func:`load_upgraded`, which works whether or not the wrapper is
installed.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import open_clip
import open_clip.factory
import torch
from torch import nn

from multipos.clip.checkpoint import CONFIG_NAME, WEIGHTS_NAME, read_spec
from multipos.clip.spec import TextContextSpec
from multipos.clip.upgrade import install_text_context

__all__ = [
    "load_upgraded",
    "open_clip_registered",
    "register_open_clip",
    "unregister_open_clip",
]

_ORIGINAL_ATTR = "__multipos_original__"
#: Weight file names looked for in an upgraded directory, in order of preference.
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", WEIGHTS_NAME)


def _original_create_model() -> Callable[..., Any]:
    """open_clip's own ``create_model``, whether or not the wrapper is installed."""
    current = open_clip.factory.create_model
    return cast(Callable[..., Any], getattr(current, _ORIGINAL_ATTR, current))


def _local_dir(model_name: Any) -> Path | None:
    """``DIR`` of a ``local-dir:DIR`` model name, else None."""
    if not isinstance(model_name, str):
        return None
    schema, identifier = open_clip.factory.parse_model_name(model_name)
    return Path(identifier) if schema == "local-dir" else None


def _stored_spec(directory: Path) -> TextContextSpec | None:
    """The multipos spec saved in ``directory``, or None (no config, or none in it)."""
    if not (directory / CONFIG_NAME).is_file():
        return None  # open_clip reports the missing config itself
    try:
        _, spec = read_spec(directory)
    except json.JSONDecodeError:
        return None  # likewise for a config that is not JSON
    return spec


def _weights_file(directory: Path) -> Path:
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"no weights file ({', '.join(WEIGHT_FILES)}) in {directory}")


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    """open_clip warns that a model built with ``load_weights=False`` is random; the weights
    are loaded right after, so the warning would be wrong."""
    root = logging.getLogger()
    flt = _DropRandomInitWarning()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def _create_upgraded(
    original: Callable[..., Any],
    directory: Path,
    spec: TextContextSpec,
    arguments: dict[str, Any],
) -> nn.Module:
    """open_clip builds the architecture of the stored ``model_cfg`` (no weights), the spec is
    installed, then the weights load strictly. ``arguments``: ``create_model``'s bound ones."""
    arguments = dict(arguments)
    model_kwargs = arguments.pop("model_kwargs", {})
    load_weights = arguments.pop("load_weights", True)
    require_pretrained = arguments.pop("require_pretrained", False)
    weights_only = arguments.get("weights_only", True)
    if arguments.pop("jit", False):
        raise ValueError(
            f"jit=True: {directory} holds a multipos-upgraded text tower, which TorchScript "
            "cannot script; use torch.compile on the returned model instead"
        )
    for name in ("pretrained_image_path", "pretrained_text_path"):
        if arguments.get(name):
            raise ValueError(
                f"{name}: tower weights cannot be mixed into the upgraded model in "
                f"{directory}; load them afterwards with model.load_state_dict(..., strict=False)"
            )
    forced = arguments.get("force_context_length")
    if forced is not None and forced != spec.context_length:
        raise ValueError(
            f"force_context_length={forced}: the text tower in {directory} was upgraded to "
            f"{spec.context_length} tokens ({spec.method}); it reads any length up to that"
        )
    weights = _weights_file(directory) if load_weights else None
    if require_pretrained and weights is None:
        raise RuntimeError(
            f"require_pretrained=True but load_weights=False for local-dir:{directory}"
        )
    quiet = _quiet_random_init_warning() if weights is not None else contextlib.nullcontext()
    with quiet:
        model = original(**arguments, load_weights=False, jit=False, **model_kwargs)
    install_text_context(model, spec)
    if weights is not None:
        open_clip.load_checkpoint(
            model, str(weights), strict=True, weights_only=weights_only, device="cpu"
        )
    return cast(nn.Module, model)


def _check_pretrained_file(arguments: dict[str, Any]) -> None:
    """Refuse ``pretrained=DIR/<weights>`` of an upgraded directory when open_clip would build
    something else: it cannot build a rotary tower, and it would interpolate a stretched table
    back to the config's length."""
    pretrained = arguments.get("pretrained")
    if not isinstance(pretrained, (str, Path)) or not Path(pretrained).is_file():
        return
    directory = Path(pretrained).parent
    spec = _stored_spec(directory)
    if spec is None:
        return
    if spec.method != "rope" and arguments.get("force_context_length") == spec.context_length:
        return  # open_clip builds the same stretched table
    hint = "" if spec.method == "rope" else f" or pass force_context_length={spec.context_length}"
    raise ValueError(
        f"pretrained={str(pretrained)!r} holds a text tower upgraded by multipos "
        f"(method {spec.method!r}, {spec.context_length} tokens); load it with "
        f"open_clip.create_model('local-dir:{directory}'){hint}"
    )


def _bind(
    original: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    bound = inspect.signature(original).bind(*args, **kwargs)
    return dict(bound.arguments)


def register_open_clip() -> None:
    """Make ``open_clip.create_model("local-dir:DIR")`` rebuild multipos-upgraded towers.

    Idempotent; called when :mod:`multipos.clip` is imported. Directories without a
    multipos spec, other schemas and built-in names go to open_clip untouched. For an upgraded
    directory, ``load_weights=False`` gives the upgraded architecture with random weights;
    ``jit=True``, ``pretrained_image_path`` / ``pretrained_text_path`` and a
    ``force_context_length`` other than the stored ``N`` raise ``ValueError``. The weights file
    of an upgraded directory given as ``pretrained=`` to another model name raises
    ``ValueError`` (naming the ``local-dir:`` to use) unless open_clip would rebuild the same
    model: a ``"rope"`` tower it cannot build, and a stretched table it would resize to the
    named config's length unless ``force_context_length=N``.
    """
    if open_clip_registered():
        return
    original = open_clip.factory.create_model

    @functools.wraps(original)
    def create_model(*args: Any, **kwargs: Any) -> Any:
        arguments = _bind(original, args, kwargs)
        directory = _local_dir(arguments.get("model_name"))
        spec = _stored_spec(directory) if directory is not None else None
        if directory is None or spec is None:
            _check_pretrained_file(arguments)
            return original(*args, **kwargs)
        return _create_upgraded(original, directory, spec, arguments)

    setattr(create_model, _ORIGINAL_ATTR, original)
    open_clip.factory.create_model = create_model
    open_clip.create_model = create_model


def unregister_open_clip() -> None:
    """Put open_clip's own ``create_model`` back (inverse of :func:`register_open_clip`)."""
    original = _original_create_model()
    open_clip.factory.create_model = original
    open_clip.create_model = original


def open_clip_registered() -> bool:
    """Whether ``open_clip.create_model`` currently recognises upgraded directories."""
    return hasattr(open_clip.factory.create_model, _ORIGINAL_ATTR) and hasattr(
        open_clip.create_model, _ORIGINAL_ATTR
    )


def load_upgraded(
    directory: str | Path,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
) -> nn.Module:
    """Load a directory written by :func:`~multipos.clip.save_upgraded`, in eval mode.

    Same result as ``open_clip.create_model("local-dir:DIR", device=..., precision=...)`` with
    the wrapper of :func:`register_open_clip` installed, but works without it and refuses a
    directory that holds no multipos spec. Nothing is downloaded.

    Raises:
        FileNotFoundError: If the config or the weights are missing.
        ValueError: If the directory holds no multipos spec.
    """
    directory = Path(directory)
    _, spec = read_spec(directory)
    if spec is None:
        raise ValueError(
            f"{directory / CONFIG_NAME} has no 'multipos.text_context' entry; "
            "load it with open_clip.create_model('local-dir:...') instead"
        )
    original = _original_create_model()
    arguments = _bind(
        original, (f"local-dir:{directory}",), {"device": device, "precision": precision}
    )
    return _create_upgraded(original, directory, spec, arguments).eval()
