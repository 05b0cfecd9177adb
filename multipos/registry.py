r"""One registry of position schemes: ``register_scheme``, ``create_scheme``, ``list_schemes``.

A scheme is a factory that returns an ``nn.Module`` together with the metadata every scheme
must carry: the paper it implements, a one-line summary, a tiny configuration and a function
that builds sample inputs for that configuration. Registering a scheme enrols it in the
contract tests (forward/backward, ``state_dict`` round trip, dtype, compile), which are
parametrised over :func:`list_schemes`.

The registry is the one source of scheme names and defaults: a factory is usually the module
class itself, so its signature holds every default once (:func:`scheme_defaults` reads them),
and framework adapters attach what they need to a registered name with
:func:`register_integration` (``multipos.vision`` does so for timm's ``pos_scheme``).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, overload

import torch
from torch import nn

__all__ = [
    "Integration",
    "SchemeSpec",
    "create_scheme",
    "get_scheme",
    "list_schemes",
    "register_integration",
    "register_scheme",
    "scheme_defaults",
]

Factory = Callable[..., nn.Module]
SampleInputs = Callable[[nn.Module, torch.Generator], tuple[Any, ...]]
F = TypeVar("F", bound=Factory)


@dataclass(frozen=True)
class Integration:
    """How a framework adapter offers a registered scheme.

    Attributes:
        target: The adapter, e.g. ``"timm"``.
        usage: One line telling a user how to reach the scheme there (``multipos list``).
        metadata: What the adapter needs to build the scheme into its models.
    """

    target: str
    usage: str
    metadata: Any = None


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
        integrations: Adapters offering the scheme, by target (see
            :func:`register_integration`).
    """

    name: str
    factory: Factory
    paper: str
    summary: str
    tiny: Mapping[str, Any] = field(default_factory=dict)
    sample_inputs: SampleInputs | None = None
    domain: str = "core"
    integrations: Mapping[str, Integration] = field(default_factory=dict)


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
        factory: Callable returning an ``nn.Module``, preferably the module class itself so
            that its signature holds each default once. If omitted, returns a decorator.
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
        >>> rope = create_scheme("rope_yarn", head_dim=64, factor=4.0, original_length=2048)

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


def scheme_defaults(name: str) -> dict[str, Any]:
    """Default keyword values of the factory registered under ``name``.

    Adapters read their defaults here instead of writing them again, so ``create_scheme(name)``
    and the adapter's options agree.

    Raises:
        ValueError: If ``name`` is unknown.
    """
    sig = inspect.signature(get_scheme(name).factory)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.default is not inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }


def register_integration(
    name: str, target: str, metadata: Any = None, *, usage: str, overwrite: bool = False
) -> None:
    """Record that the adapter ``target`` offers the registered scheme ``name``.

    Example:
        ``multipos.vision`` registers ``("irpe", "timm", ViTScheme(...))``, which makes
        ``"irpe"`` a valid ``pos_scheme`` of its timm models.

    Args:
        name: A registered scheme name.
        target: The adapter, e.g. ``"timm"``.
        metadata: What the adapter needs to build the scheme.
        usage: One line telling a user how to reach it, shown by ``multipos list``.
        overwrite: Replace an existing integration of the same target instead of raising.

    Raises:
        ValueError: If ``name`` is not registered, or ``target`` already integrates it and
            ``overwrite`` is false.
    """
    spec = get_scheme(name)
    if target in spec.integrations and not overwrite:
        raise ValueError(
            f"scheme {name!r} already has a {target!r} integration; pass overwrite=True"
        )
    entry = Integration(target=target, usage=usage, metadata=metadata)
    _REGISTRY[name] = replace(spec, integrations={**spec.integrations, target: entry})


def list_schemes(pattern: str = "*", *, integration: str | None = None) -> list[str]:
    """Sorted names of the registered schemes matching the shell-style ``pattern``.

    Args:
        pattern: Shell-style filter, e.g. ``"rope*"``.
        integration: Keep only schemes that this adapter offers (e.g. ``"timm"``).
    """
    return sorted(
        n
        for n, spec in _REGISTRY.items()
        if fnmatch.fnmatchcase(n, pattern)
        and (integration is None or integration in spec.integrations)
    )
