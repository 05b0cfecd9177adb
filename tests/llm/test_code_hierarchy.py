"""Code hierarchy spans and HiRoPE positions (arXiv:2403.19115)."""

from __future__ import annotations

import re
import sysconfig
from pathlib import Path

import pytest
import torch

from multipos.llm import CodeHierarchy, CodeSpan, code_hierarchy, hirope_positions

SNIPPET = (
    "import os\n"
    "\n"
    "@decorate\n"
    "class Shape(Base):\n"
    "    sides = 0\n"
    "\n"
    "    def area(self):\n"
    "        for i in range(3):\n"
    "            print('é', i)\n"
    "        return 1\n"
    "\n"
    "value = Shape()\n"
)
STDLIB = Path(sysconfig.get_paths()["stdlib"])
WORDS = re.compile(r"\w+|\s+|[^\w\s]+")


def chars(text: str) -> torch.Tensor:
    n = len(text)
    return torch.stack((torch.arange(n), torch.arange(1, n + 1)), dim=1)


def words(text: str) -> torch.Tensor:
    """A word tokenizer whose tokens can straddle block boundaries (`"\\n\\n"`, `" "`)."""
    return torch.tensor([m.span() for m in WORDS.finditer(text)], dtype=torch.long)


def test_python_spans_snapshot() -> None:
    h = code_hierarchy(SNIPPET)
    assert h.parser == "ast" and h.reason is None
    got = [(s.kind, s.depth, SNIPPET[s.start : s.end].split("\n")[0]) for s in h]
    assert got == [
        ("module", 0, "import os"),
        ("statement", 0, "import os"),
        ("class", 1, "@decorate"),
        ("statement", 1, "sides = 0"),
        ("function", 2, "def area(self):"),
        ("statement", 2, "for i in range(3):"),
        ("statement", 2, "print('é', i)"),  # character offsets, not UTF-8 bytes
        ("statement", 2, "return 1"),
        ("statement", 0, "value = Shape()"),
    ]
    assert SNIPPET[h[6].start : h[6].end] == "print('é', i)"


def test_a_definition_starts_at_its_first_decorator() -> None:
    source = "x = 1\n\n@ spaced (1)\n@other\ndef f():\n    pass\n"
    (definition,) = code_hierarchy(source).definitions()
    assert source[definition.start :].startswith("@ spaced")


def test_positions_snapshot_with_special_tokens() -> None:
    h = code_hierarchy(SNIPPET)
    offsets = torch.cat((torch.zeros(1, 2, dtype=torch.long), chars(SNIPPET), torch.zeros(1, 2)))
    pos = hirope_positions(h, offsets.long())
    assert pos.shape == (2, len(SNIPPET) + 2)
    # BOS takes the first token's place; the class starts at its decorator ("@" at char 11)
    assert pos[:, :3].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert pos[:, 12].tolist() == [0, 1]
    # EOS (0, 0) at the end continues the last block
    assert pos[0, -1] == pos[0, -2] + 1 and pos[1, -1] == pos[1, -2]
    # four blocks: "import os", class header, method, trailing statement
    assert pos[1].unique().tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("name", ["textwrap.py", "json/decoder.py", "contextlib.py"])
@pytest.mark.parametrize("tokenizer", [chars, words])
def test_stdlib_files_every_token_placed_and_monotone(name: str, tokenizer) -> None:
    source = (STDLIB / name).read_text(encoding="utf-8")
    h = code_hierarchy(source)
    assert h.parser == "ast"
    offsets = tokenizer(source)
    pos = hirope_positions(h, offsets)
    token, block = pos
    assert pos.shape == (2, len(offsets)) and bool((pos >= 0).all())
    step = block.diff()
    assert set(step.unique().tolist()) <= {0, 1}  # block ids monotone, no gaps
    same = step == 0
    assert bool((token.diff()[same] == 1).all())  # +1 per token inside a block
    assert bool((token[1:][~same] == 0).all()) and token[0] == 0  # restart in a new block
    assert int(block[-1]) >= len(h.definitions())  # every definition opens a block
    # the token holding a definition's first character opens its block
    starts = offsets[:, 0].contiguous()
    for span in h.definitions():
        t = int(torch.searchsorted(starts, span.start, right=True)) - 1
        assert token[t] == 0, (name, span)


def test_three_levels_restart_statements_per_block() -> None:
    source = (STDLIB / "textwrap.py").read_text(encoding="utf-8")
    pos = hirope_positions(code_hierarchy(source), chars(source), levels=3)
    token, statement, block = pos
    new_block = torch.cat((torch.tensor([True]), block.diff() != 0))
    assert bool((statement[new_block] == 0).all())
    inside = ~new_block
    assert set(statement.diff()[inside[1:]].unique().tolist()) <= {0, 1}
    new_unit = torch.cat((torch.tensor([True]), (statement.diff() != 0) | (block.diff() != 0)))
    assert bool((token[new_unit] == 0).all()) and bool((token.diff()[~new_unit[1:]] == 1).all())
    assert int(statement.max()) > 5


def test_no_tokens_give_empty_positions() -> None:
    for levels in (1, 2, 3):
        assert hirope_positions(code_hierarchy(SNIPPET), [], levels=levels).shape == (levels, 0)


def test_one_level_is_the_flat_index() -> None:
    pos = hirope_positions(code_hierarchy(SNIPPET), chars(SNIPPET), levels=1)
    assert torch.equal(pos, torch.arange(len(SNIPPET)).unsqueeze(0))


@pytest.mark.parametrize(
    "source",
    ["def broken(:\n    return\n\nx = 1\n", "x = 1\x00\n", "", "   \n\n", "class A:\n\tpass\n  x"],
)
def test_unparsable_code_falls_back_without_error(source: str) -> None:
    h = code_hierarchy(source)
    assert isinstance(h, CodeHierarchy) and h.spans[0] == CodeSpan(0, len(source), "module", 0)
    if source.strip():
        assert h.parser == "fallback" and "did not parse" in (h.reason or "")
    pos = hirope_positions(h, chars(source))
    assert pos.shape == (2, len(source))


def test_fallback_blocks_follow_blank_lines_and_dedents() -> None:
    source = "def f(:\n    a\n\n    b\nx = 1\n\ny = 2\n"
    h = code_hierarchy(source)
    blocks = [source[s.start : s.end] for s in h.definitions()]
    assert blocks == ["def f(:\n    a\n\n    b", "x = 1", "y = 2"]
    assert len(h.statements()) == 5


def test_text_language_uses_the_fallback_on_purpose() -> None:
    h = code_hierarchy("a\n\nb\n", language="text")
    assert h.parser == "fallback" and "text" in (h.reason or "")


def test_javascript_parses_into_blocks() -> None:
    pytest.importorskip("tree_sitter_language_pack", reason="needs the code extra")
    source = "function f(a) { return a + 1 }\nclass A { m() { let x = 1; } }\nf(2);\n"
    h = code_hierarchy(source, language="javascript")
    assert h.parser == "tree-sitter" and h.reason is None
    kinds = [(s.kind, s.depth, source[s.start : s.end].split(" ")[0]) for s in h.definitions()]
    assert kinds == [("function", 1, "function"), ("class", 1, "class"), ("function", 2, "m()")]
    pos = hirope_positions(h, words(source))
    assert pos[1].unique().numel() >= 4


def test_javascript_syntax_error_falls_back() -> None:
    pytest.importorskip("tree_sitter_language_pack", reason="needs the code extra")
    h = code_hierarchy("function f( {\n", language="javascript")
    assert h.parser == "fallback" and "syntax" in (h.reason or "")


def test_unknown_grammar_falls_back_visibly() -> None:
    with pytest.warns(UserWarning, match="no-such-language"):
        h = code_hierarchy("a = 1\n", language="no-such-language")
    assert h.parser == "fallback" and "no-such-language" in (h.reason or "")


def test_bad_arguments_raise() -> None:
    with pytest.raises(TypeError, match="source"):
        code_hierarchy(b"x = 1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="language"):
        code_hierarchy("x", language=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lower-case"):
        code_hierarchy("x", language="Python 3")
    h = code_hierarchy(SNIPPET)
    with pytest.raises(ValueError, match=r"\(L, 2\)"):
        hirope_positions(h, torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="integers"):
        hirope_positions(h, torch.zeros(4, 2))
    with pytest.raises(ValueError, match="start <= end"):
        hirope_positions(h, [[3, 1]])
    with pytest.raises(ValueError, match="text order"):
        hirope_positions(h, [[4, 5], [0, 1]])
    with pytest.raises(ValueError, match="source has"):
        hirope_positions(h, [[0, len(SNIPPET) + 1]])
    with pytest.raises(ValueError, match="levels"):
        hirope_positions(h, [[0, 1]], levels=4)
    with pytest.raises(TypeError, match="levels"):
        hirope_positions(h, [[0, 1]], levels="2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="CodeSpan"):
        hirope_positions([(0, 1)], [[0, 1]])  # type: ignore[list-item]
