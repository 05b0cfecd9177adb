r"""Shared pieces of the PyG transforms: option checks and a ``repr`` that lists options.

Attribute names matter to PyG's ``DataLoader``: ``Data.__inc__`` offsets any attribute whose
name contains ``index`` (by the node count) or ``batch`` (by its maximum + 1), and
``Data.__cat_dim__`` concatenates ``*index*`` attributes along the last axis. The transforms
name their outputs ``{attr_prefix}_...``, so a prefix with either word is refused.
"""

from __future__ import annotations

from typing import Any

from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

__all__ = ["COLLATED_SPECIALLY", "Transform", "check_data", "check_name", "check_prefix"]


def check_data(data: Any) -> Data:
    if not isinstance(data, Data):
        raise TypeError(
            f"expected a torch_geometric.data.Data (homogeneous graph), got {type(data).__name__}"
        )
    return data


#: Substrings that make PyG's ``Data.__inc__`` / ``__cat_dim__`` collate an attribute
#: specially: ``index`` is offset by the node count and concatenated along the last axis,
#: ``batch`` is offset by its maximum + 1.
COLLATED_SPECIALLY = ("index", "batch")


def check_name(name: str, value: object, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, str) or not value.isidentifier():
        raise ValueError(f"{name} must be a Python identifier string, got {value!r}")


def check_prefix(value: object) -> None:
    check_name("attr_prefix", value)
    for word in COLLATED_SPECIALLY:
        if word in str(value):
            raise ValueError(
                f"attr_prefix={value!r} contains {word!r}: PyG's DataLoader offsets attributes "
                f"whose name contains 'index' or 'batch' when it batches graphs, which would "
                "corrupt the PE; choose another prefix"
            )


class Transform(BaseTransform):  # type: ignore[misc]
    """A transform whose ``repr`` lists its options (``_fields``)."""

    _fields: tuple[str, ...] = ()

    def __repr__(self) -> str:
        options = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({options})"
