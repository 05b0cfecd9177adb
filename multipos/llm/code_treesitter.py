"""Code hierarchy spans from a tree-sitter syntax tree (optional ``code`` extra).

Used by :func:`multipos.llm.code_hierarchy` for languages other than Python. Definitions are
recognised by node type across grammars (functions, methods, classes, structs, impls, traits,
interfaces, enums, modules / namespaces); statements are named nodes whose type ends in
``statement`` or ``declaration``. Offsets are converted
from UTF-8 bytes to characters.
"""

from __future__ import annotations

from typing import Any

# (start, end, kind, depth) in characters; multipos.llm.code_hierarchy makes CodeSpans of them
RawSpan = tuple[int, int, str, int]

__all__ = ["tree_sitter_spans"]

_CLASS_TYPES = frozenset(
    {
        "class_declaration",
        "class_definition",
        "class_specifier",
        "struct_specifier",
        "struct_item",
        "enum_item",
        "enum_declaration",
        "trait_item",
        "impl_item",
        "interface_declaration",
        "namespace_definition",
        "mod_item",
        "module",
        "object_declaration",
        "type_declaration",
    }
)
_FUNCTION_TYPES = frozenset(
    {
        "function_declaration",
        "function_definition",
        "function_item",
        "method_definition",
        "method_declaration",
        "constructor_declaration",
        "generator_function_declaration",
        "func_literal",
    }
)


def _char_offsets(source: str) -> list[int] | None:
    """Map from UTF-8 byte offset to character offset (``None`` when they coincide)."""
    if source.isascii():
        return None
    table: list[int] = []
    for i, ch in enumerate(source):
        table.extend([i] * len(ch.encode("utf-8")))
    table.append(len(source))
    return table


def tree_sitter_spans(source: str, language: str) -> tuple[list[RawSpan] | None, str | None]:
    """Spans of ``source`` parsed by the tree-sitter grammar of ``language``.

    Returns:
        ``(spans, None)`` on success, spans as ``(start, end, kind, depth)`` in characters;
        ``(None, reason)`` when the ``code`` extra or the grammar is missing (reason starts
        with ``"no grammar"``/``"tree-sitter"``) or the tree has syntax errors (reason starts
        with ``"syntax"``).
    """
    try:
        from tree_sitter_language_pack import get_parser
    except ImportError:
        return None, "tree-sitter is not installed (pip install 'multipos[code]')"
    try:
        parser = get_parser(language)  # type: ignore[arg-type]
    except (LookupError, ValueError, OSError) as err:
        return None, f"no grammar for {language!r} in tree-sitter-language-pack: {err}"
    data = source.encode("utf-8")
    root = parser.parse(data).root_node
    if root.has_error:
        return None, f"syntax errors in the {language} tree (tree-sitter error nodes)"
    chars = _char_offsets(source)

    def char(offset: int) -> int:
        return offset if chars is None else chars[offset]

    spans: list[RawSpan] = []
    stack: list[tuple[Any, int]] = [(child, 0) for child in reversed(root.named_children)]
    while stack:
        node, depth = stack.pop()
        kind: str | None = None
        if node.type in _CLASS_TYPES:
            kind = "class"
        elif node.type in _FUNCTION_TYPES:
            kind = "function"
        elif node.type.endswith(("statement", "declaration")):
            kind = "statement"
        inner = depth
        if kind is not None:
            if kind != "statement":
                inner = depth + 1
            spans.append((char(node.start_byte), char(node.end_byte), kind, inner))
        stack.extend((child, inner) for child in reversed(node.named_children))
    return spans, None
