r"""The block structure of source code, as character spans, for HiRoPE.

From "HiRoPE: Length Extrapolation for Code Models Using Hierarchical Position" (Zhang, Li,
Zhang, Jin, ACL 2024, arXiv:2403.19115): every token gets a position per level of the
code's hierarchy (function level and token level in the paper) taken from its syntax tree.

:func:`code_hierarchy` returns that structure as :class:`CodeSpan` s in character offsets of
the source string, whatever parser produced it: Python's own :mod:`ast` for ``"python"``,
tree-sitter for other languages when the optional ``code`` extra is installed, and a
grammar-free fallback (blank-line and indentation blocks, one statement per line) for code that
does not parse or has no grammar. The result says which parser was used and, for the fallback,
why (:attr:`CodeHierarchy.reason`).
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, cast

__all__ = ["CodeHierarchy", "CodeSpan", "code_hierarchy"]

SpanKind = Literal["module", "class", "function", "block", "statement"]
Parser = Literal["ast", "tree-sitter", "fallback"]
DEFINITION_KINDS: tuple[str, ...] = ("class", "function", "block")
_LANGUAGE_NAME = re.compile(r"^[a-z][a-z0-9_+#-]*$")
_NEWLINE = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class CodeSpan:
    """One unit of the code hierarchy: characters ``source[start:end]``.

    Attributes:
        start: First character (offset into the source string, not bytes).
        end: One past the last character.
        kind: ``"module"`` (the whole source), ``"class"``, ``"function"``, ``"block"`` (a
            definition-like block found by the fallback), or ``"statement"``.
        depth: Nesting depth among definitions: 0 for the module, 1 for a top-level class or
            function, 2 for a method or nested function, ...; a statement has the depth of the
            definition that contains it.
    """

    start: int
    end: int
    kind: SpanKind
    depth: int


@dataclass(frozen=True)
class CodeHierarchy:
    """The spans of one source string, in order of their start (then outer before inner).

    Iterating, ``len`` and indexing act on :attr:`spans`.

    Attributes:
        source: The source string the offsets refer to.
        language: The language that was asked for.
        parser: ``"ast"``, ``"tree-sitter"`` or ``"fallback"``.
        reason: Why the fallback was used (syntax error, missing grammar, ...); ``None``
            when the language's parser succeeded.
        spans: The spans; the first is always the module ``(0, len(source))``.
    """

    source: str
    language: str
    parser: Parser
    reason: str | None
    spans: tuple[CodeSpan, ...] = field(repr=False)

    def __iter__(self) -> Iterator[CodeSpan]:
        return iter(self.spans)

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, index: int) -> CodeSpan:
        return self.spans[index]

    def definitions(self) -> list[CodeSpan]:
        """The class, function and fallback-block spans."""
        return [s for s in self.spans if s.kind in DEFINITION_KINDS]

    def statements(self) -> list[CodeSpan]:
        """The statement spans."""
        return [s for s in self.spans if s.kind == "statement"]


def line_starts(source: str) -> list[int]:
    """Character offset of the start of every line (Python's newline rules)."""
    return [0] + [m.end() for m in _NEWLINE.finditer(source)]


class _Offsets:
    """(line, UTF-8 byte column) -> character offset, as :mod:`ast` reports positions."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.starts = line_starts(source)

    def char(self, lineno: int, col: int) -> int:
        start = self.starts[min(lineno - 1, len(self.starts) - 1)]
        line = self.source[start : start + col]
        if line.isascii():
            return start + col
        # Columns count UTF-8 bytes: walk the line's characters until ``col`` bytes are used.
        used = 0
        for i, ch in enumerate(self.source[start:]):
            if used >= col:
                return start + i
            used += len(ch.encode("utf-8"))
        return len(self.source)


def _python_spans(source: str) -> list[CodeSpan]:
    tree = ast.parse(source)
    where = _Offsets(source)
    spans: list[CodeSpan] = []

    def visit(body: list[ast.stmt], depth: int) -> None:
        for node in body:
            start = where.char(node.lineno, node.col_offset)
            decorators = getattr(node, "decorator_list", [])
            if decorators:  # a definition starts at the "@" of its first decorator
                d = min(decorators, key=lambda e: (e.lineno, e.col_offset))
                at = where.char(d.lineno, d.col_offset)
                found = source.rfind("@", 0, at + 1)
                start = min(start, found if found >= 0 else at)
            end = where.char(node.end_lineno or node.lineno, node.end_col_offset or 0)
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                kind: SpanKind = "class" if isinstance(node, ast.ClassDef) else "function"
                spans.append(CodeSpan(start, end, kind, depth + 1))
                visit(node.body, depth + 1)
                continue
            spans.append(CodeSpan(start, end, "statement", depth))
            for name in ("body", "orelse", "finalbody", "handlers", "cases"):
                inner = getattr(node, name, None)
                if isinstance(inner, list):
                    nested: list[ast.stmt] = []
                    for item in inner:  # except handlers and match cases hold statements
                        if isinstance(item, ast.stmt):
                            nested.append(item)
                        else:
                            nested += [
                                n for n in getattr(item, "body", []) if isinstance(n, ast.stmt)
                            ]
                    visit(nested, depth)

    visit(tree.body, 0)
    return spans


def fallback_spans(source: str) -> list[CodeSpan]:
    """Grammar-free blocks: a non-blank line at the smallest indentation that follows a blank
    line or an indented line opens a block (depth 1); every non-blank line is a statement."""
    starts = line_starts(source)
    ends = [*starts[1:], len(source)]
    lines = [source[a:b] for a, b in zip(starts, ends, strict=True)]
    indents = [len(t) - len(t.lstrip()) for t in lines if t.strip()]
    base = min(indents, default=0)
    spans: list[CodeSpan] = []
    block_start: int | None = None
    previous_blank, previous_indented = True, False
    for a, text in zip(starts, lines, strict=True):
        stripped = text.strip()
        if not stripped:
            previous_blank = True
            continue
        indent = len(text) - len(text.lstrip())
        first = a + indent
        if indent <= base and (previous_blank or previous_indented or block_start is None):
            if block_start is not None:
                spans.append(CodeSpan(block_start, _block_end(source, first), "block", 1))
            block_start = first
        spans.append(CodeSpan(first, a + len(text.rstrip()), "statement", 1))
        previous_blank, previous_indented = False, indent > base
    if block_start is not None:
        spans.append(CodeSpan(block_start, len(source.rstrip()), "block", 1))
    return spans


def _block_end(source: str, next_start: int) -> int:
    return len(source[:next_start].rstrip())


def _tree_sitter_spans(source: str, language: str) -> tuple[list[CodeSpan] | None, str | None]:
    try:
        from multipos.llm.code_treesitter import tree_sitter_spans
    except ImportError as err:  # pragma: no cover - the module itself has no hard imports
        return None, f"tree-sitter support could not be imported: {err}"
    raw, reason = tree_sitter_spans(source, language)
    if raw is None:
        return None, reason
    return [CodeSpan(a, b, cast(SpanKind, kind), depth) for a, b, kind, depth in raw], None


def code_hierarchy(source: str, language: str = "python") -> CodeHierarchy:
    r"""Parse ``source`` into the spans of its hierarchy (module, definitions, statements).

    From "HiRoPE: Length Extrapolation for Code Models Using Hierarchical Position" (Zhang et
    al., ACL 2024, arXiv:2403.19115), method: the hierarchy comes from the code's syntax
    tree. Definitions (class, function, method) and statements become :class:`CodeSpan` s with
    character offsets, so they align with a tokenizer's offset mapping
    (:func:`multipos.llm.hirope_positions`).

    Parsers:

    * ``"python"``: :mod:`ast` (decorators belong to their definition; ``ast`` byte columns are
      converted to characters).
    * any other name: tree-sitter through ``tree_sitter_language_pack.get_parser(language)``
      (the optional ``code`` extra).
    * ``"text"``: the fallback directly.

    Code that does not parse (a syntax error; tree-sitter error nodes), a language without an
    installed grammar, or a missing ``code`` extra all give the fallback: blocks separated by
    blank lines or dedents to the outermost indentation, one statement per non-blank line.
    The result's ``parser`` is then ``"fallback"`` and ``reason`` says why; a missing grammar
    or extra also emits a :class:`UserWarning` (a syntax error does not: it is the expected
    input of the fallback).

    Args:
        source: The source code.
        language: Lower-case language name (``"python"``, ``"javascript"``, ``"rust"``, ...,
            ``"text"``).

    Returns:
        :class:`CodeHierarchy`.

    Raises:
        TypeError: If ``source`` or ``language`` is not a string.
        ValueError: If ``language`` is not a lower-case name such as ``"python"``.
    """
    if not isinstance(source, str):
        raise TypeError(f"source must be a str, got {type(source).__name__}")
    if not isinstance(language, str):
        raise TypeError(f"language must be a str such as 'python', got {type(language).__name__}")
    if not _LANGUAGE_NAME.match(language):
        raise ValueError(
            f"language must be a lower-case name such as 'python', 'javascript' or 'text', "
            f"got {language!r}"
        )
    module = CodeSpan(0, len(source), "module", 0)
    spans: list[CodeSpan] | None = None
    reason: str | None
    parser: Parser
    if language == "python":
        try:
            spans, parser, reason = _python_spans(source), "ast", None
        except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
            # ValueError: null bytes; RecursionError/MemoryError: pathologically deep nesting.
            reason = f"python did not parse: {type(err).__name__}: {err}"
    elif language == "text":
        reason = "language 'text' asks for the fallback"
    else:
        spans, reason = _tree_sitter_spans(source, language)
        parser = "tree-sitter"
        if spans is None and reason is not None and not reason.startswith("syntax"):
            warnings.warn(
                f"code_hierarchy: no tree-sitter grammar for {language!r} ({reason}); "
                "using the grammar-free fallback",
                UserWarning,
                stacklevel=2,
            )
    if spans is None:
        spans, parser = fallback_spans(source), "fallback"
    spans.sort(key=lambda s: (s.start, -s.end, s.kind == "statement", s.depth))
    return CodeHierarchy(source, language, parser, reason, (module, *spans))
