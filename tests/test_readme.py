"""Every Python block of README.md runs offline, exactly as written.

The Python blocks of one ``##`` section run in order in one fresh namespace, with a fresh
temporary directory as the working directory, so files a block writes land there and later
blocks of the same section can read them. A block that needs a download is preceded by the
line ``<!-- readme-test: skip: <reason> -->``; it is skipped by name with that reason and the
other blocks of its section still run. Sockets to anything but this machine are refused while
the blocks run, so a block that tries to download fails instead of passing on a warm cache.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_MARKER = re.compile(r"^<!--\s*readme-test:(?P<body>.*?)-->\s*$")
_SKIP = re.compile(r"^\s*skip:\s*(?P<reason>\S.*?)\s*$")
_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "MPLBACKEND": "Agg",
}


@dataclass(frozen=True)
class Block:
    """One fenced Python block: its section, position in the section and README line."""

    section: str
    index: int
    line: int  # README line of the block's first code line (1-based)
    source: str
    skip: str | None = None

    @property
    def name(self) -> str:
        return f"{self.section}-{self.index} (README.md line {self.line})"


@dataclass
class Readme:
    blocks: list[Block] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _slug(heading: str) -> str:
    # "Vision: position schemes in timm ViTs (`multipos.vision`)" -> "vision"
    head = re.split(r"[:(]", heading, maxsplit=1)[0]
    return re.sub(r"[^a-z0-9]+", "-", head.lower()).strip("-") or "section"


def parse_readme(text: str) -> Readme:
    """Python blocks of ``text`` with their ``##`` section and skip reason; misuse as problems."""
    out = Readme()
    section, counts = "top", {"top": 0}
    pending: tuple[int, str] | None = None  # (line, reason) of a skip marker awaiting its block
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line, lineno = lines[i], i + 1
        fence = _FENCE.match(line)
        if fence:
            char, width = fence["fence"][0], len(fence["fence"])
            close = re.compile(rf"^ {{0,3}}{re.escape(char)}{{{width},}}\s*$")
            j = i + 1
            while j < len(lines) and not close.match(lines[j]):
                j += 1
            if j == len(lines):
                out.problems.append(f"line {lineno}: code fence is never closed")
            if fence["info"].lower() == "python":
                counts[section] += 1
                out.blocks.append(
                    Block(
                        section=section,
                        index=counts[section],
                        line=lineno + 1,
                        source="\n".join(lines[i + 1 : j]) + "\n",
                        skip=pending[1] if pending else None,
                    )
                )
            elif pending:
                out.problems.append(
                    f"line {pending[0]}: skip marker precedes a {fence['info'] or 'plain'!r} "
                    "block, not a python block"
                )
            pending = None
            i = j + 1
            continue
        marker = _MARKER.match(line.strip())
        if marker:
            skip = _SKIP.match(marker["body"])
            if skip is None:
                out.problems.append(
                    f"line {lineno}: expected '<!-- readme-test: skip: <reason> -->', got {line!r}"
                )
            elif pending:
                out.problems.append(f"line {pending[0]}: skip marker not followed by a block")
            else:
                pending = (lineno, skip["reason"])
        elif line.strip():
            if pending:
                out.problems.append(
                    f"line {pending[0]}: skip marker must be the line right before a block"
                )
                pending = None
            if line.startswith("## "):
                section = _slug(line[3:])
                if section in counts:
                    out.problems.append(f"line {lineno}: two sections named {section!r}")
                counts.setdefault(section, 0)
        i += 1
    if pending:
        out.problems.append(f"line {pending[0]}: skip marker not followed by a block")
    return out


PARSED = parse_readme(README.read_text(encoding="utf-8"))
SECTIONS = list(dict.fromkeys(b.section for b in PARSED.blocks if b.skip is None))
SKIPPED = [b for b in PARSED.blocks if b.skip is not None]


def test_every_python_block_is_run_or_skipped_with_a_reason() -> None:
    assert not PARSED.problems, "\n".join(PARSED.problems)
    text = README.read_text(encoding="utf-8")
    # Counted without the parser, so a parser that finds nothing cannot pass this test.
    fences = re.findall(r"^ {0,3}(?:```|~~~)\s*python\s*$", text, flags=re.MULTILINE)
    assert len(fences) > 0
    assert len(PARSED.blocks) == len(fences)
    run = [b for b in PARSED.blocks if b.section in SECTIONS and b.skip is None]
    assert len(run) + len(SKIPPED) == len(PARSED.blocks)
    assert all(b.skip for b in SKIPPED), "every skip names its reason"
    assert run, "at least one block must run"


def test_parser_finds_sections_blocks_and_markers() -> None:
    text = "\n".join(
        [
            "# t",
            "```python",
            "a = 1",
            "```",
            "## Vision: things (`x`)",
            "```bash",
            "## not a heading inside a fence",
            "```",
            "<!-- readme-test: skip: needs the network -->",
            "```python",
            "b = 2",
            "```",
            "",
            "~~~~python",
            "c = 3",
            "```",
            "~~~~",
            "<!-- readme-test: skip: dangling -->",
            "text",
        ]
    )
    parsed = parse_readme(text)
    assert [(b.section, b.index, b.line, b.skip) for b in parsed.blocks] == [
        ("top", 1, 3, None),
        ("vision", 1, 11, "needs the network"),
        ("vision", 2, 15, None),
    ]
    assert parsed.blocks[2].source == "c = 3\n```\n"
    assert parsed.problems == ["line 18: skip marker must be the line right before a block"]
    assert parse_readme("```python\nx = 1\n").problems == ["line 1: code fence is never closed"]
    assert parse_readme("<!-- readme-test: run -->\n").problems[0].startswith("line 1: expected")


def _is_local(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A fresh working directory, offline settings, and no sockets to other machines."""
    for key, value in _OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(key, str(tmp_path / "cache" / key.lower()))
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):
            raise OSError(f"README blocks must run offline; tried to connect to {address!r}")
        real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_local(host):
            raise OSError(f"README blocks must run offline; tried to look up {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work


def test_offline_fixture_refuses_other_machines(offline: Path) -> None:
    assert Path.cwd() == offline and not any(offline.iterdir())
    with pytest.raises(OSError, match="offline"):
        socket.create_connection(("192.0.2.1", 443), timeout=1)
    with pytest.raises(OSError, match="offline"):
        socket.create_connection(("huggingface.co", 443), timeout=1)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        socket.create_connection(server.getsockname(), timeout=1).close()


@pytest.mark.parametrize("section", SECTIONS)
def test_readme_section_runs(section: str, offline: Path) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for block in PARSED.blocks:
            if block.section != section or block.skip is not None:
                continue
            # Padding keeps README line numbers in tracebacks.
            code = compile("\n" * (block.line - 1) + block.source, str(README), "exec")
            try:
                exec(code, namespace)
            except Exception as error:
                error.add_note(f"in README block {block.name}")
                raise


@pytest.mark.parametrize("block", SKIPPED, ids=[f"{b.section}-{b.index}" for b in SKIPPED])
def test_readme_block_skipped(block: Block) -> None:
    pytest.skip(f"README block {block.name}: {block.skip}")
