r"""One registry of position schemes: ``register_scheme``, ``create_scheme``, ``list_schemes``.

A scheme is a factory that returns an ``nn.Module`` together with the metadata every scheme
must carry: the paper it implements, a one-line summary, a tiny configuration and a function
that builds sample inputs for that configuration. Registering a scheme enrols it in the
contract tests (forward/backward, ``state_dict`` round trip, dtype, compile), which are
parametrised over :func:`list_schemes`.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

import torch
from torch import nn

__all__ = [
    "SchemeSpec",
    "create_scheme",
    "get_scheme",
    "list_schemes",
    "register_scheme",
]

Factory = Callable[..., nn.Module]
SampleInputs = Callable[[nn.Module, torch.Generator], tuple[Any, ...]]
F = TypeVar("F", bound=Factory)


@dataclass(frozen=True)
class SchemeSpec:
    """Everything the library knows about a registered scheme.

    Attributes:
        name: Registry name, ``family[_variant]`` in snake case.
        factory: Callable returning the scheme's ``nn.Module``.
        paper: Title, authors, year and arXiv id of the paper the scheme implements.
        summary: One line saying what the module computes.
        tiny: Keyword arguments of a tiny configuration, used by the contract tests.
        sample_inputs: ``(module, generator) -> args`` building inputs for ``module(*args)``.
            It may also draw random values into parameters that start at zero (iRPE tables),
            so that the sample exercises every term; call it on throwaway modules.
        domain: ``"core"`` or the subpackage that registered it (``"vision"``, ``"graph"``...).
    """

    name: str
    factory: Factory
    paper: str
    summary: str
    tiny: Mapping[str, Any] = field(default_factory=dict)
    sample_inputs: SampleInputs | None = None
    domain: str = "core"


_REGISTRY: dict[str, SchemeSpec] = {}


def _check_name(name: str) -> None:
    if not name or not name.replace("_", "").isalnum() or name.lower() != name or name[0] == "_":
        raise ValueError(f"scheme names are snake_case 'family[_variant]', got {name!r}")


@overload
def register_scheme(
    name: str,
    factory: None = None,
    *,
    paper: str,
    summary: str,
    tiny: Mapping[str, Any] | None = None,
    sample_inputs: SampleInputs | None = None,
    domain: str = "core",
    overwrite: bool = False,
) -> Callable[[F], F]: ...


@overload
def register_scheme(
    name: str,
    factory: F,
    *,
    paper: str,
    summary: str,
    tiny: Mapping[str, Any] | None = None,
    sample_inputs: SampleInputs | None = None,
    domain: str = "core",
    overwrite: bool = False,
) -> F: ...


def register_scheme(
    name: str,
    factory: Factory | None = None,
    *,
    paper: str,
    summary: str,
    tiny: Mapping[str, Any] | None = None,
    sample_inputs: SampleInputs | None = None,
    domain: str = "core",
    overwrite: bool = False,
) -> Any:
    """Register a position scheme under ``name``; usable directly or as a decorator.

    Args:
        name: Registry name (``family[_variant]``, snake case).
        factory: Callable returning an ``nn.Module``. If omitted, returns a decorator.
        paper: The paper implemented (title, authors, year, arXiv id).
        summary: One line describing what the module computes.
        tiny: Keyword arguments of a tiny configuration for the contract tests.
        sample_inputs: ``(module, generator) -> args`` for ``module(*args)``; may fill
            zero-initialised parameters with random values (see :class:`SchemeSpec`).
        domain: Which part of the library registered the scheme.
        overwrite: Replace an existing entry instead of raising.

    Returns:
        ``factory`` (unchanged), or a decorator when ``factory`` is omitted.

    Raises:
        ValueError: If ``name`` is not snake case or is already registered and ``overwrite``
            is false.
    """
    _check_name(name)

    def _register(fn: F) -> F:
        if name in _REGISTRY and not overwrite:
            raise ValueError(
                f"scheme {name!r} is already registered (by {_REGISTRY[name].domain}); "
                "pass overwrite=True to replace it"
            )
        _REGISTRY[name] = SchemeSpec(
            name=name,
            factory=fn,
            paper=paper,
            summary=summary,
            tiny=dict(tiny or {}),
            sample_inputs=sample_inputs,
            domain=domain,
        )
        return fn

    if factory is None:
        return _register
    return _register(factory)


def get_scheme(name: str) -> SchemeSpec:
    """Return the :class:`SchemeSpec` registered under ``name``.

    Raises:
        ValueError: If ``name`` is unknown; the message lists close matches and every
            registered name.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"unknown scheme {name!r}.{hint} Registered schemes: {', '.join(sorted(_REGISTRY))}. "
            "Domain schemes appear after importing multipos.vision / multipos.graph / "
            "multipos.documents."
        ) from None


def _accepted_kwargs(factory: Factory) -> tuple[set[str], bool]:
    sig = inspect.signature(factory)
    names = {
        p.name
        for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    return names, var_kw


def create_scheme(name: str, **kwargs: Any) -> nn.Module:
    """Build the scheme registered under ``name`` with keyword arguments ``kwargs``.

    Example:
        >>> rope = create_scheme("rope_yarn", dim=64, factor=4.0, original_length=2048)

    Raises:
        ValueError: If ``name`` is unknown (the message lists the registered names).
        TypeError: If a keyword is not accepted by the scheme (the message lists the valid
            ones).
    """
    spec = get_scheme(name)
    accepted, var_kw = _accepted_kwargs(spec.factory)
    unknown = sorted(set(kwargs) - accepted)
    if unknown and not var_kw:
        raise TypeError(
            f"scheme {name!r} got unexpected keyword argument(s) {', '.join(unknown)}; "
            f"valid keywords: {', '.join(sorted(accepted))}"
        )
    return spec.factory(**kwargs)


def list_schemes(pattern: str = "*") -> list[str]:
    """Sorted names of the registered schemes matching the shell-style ``pattern``."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))
