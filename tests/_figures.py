"""Checks shared by the figure tests: what every picture of the library must carry."""

from __future__ import annotations

import sys

import pytest

from multipos.plot import CAPTION_GID


def data_axes(fig) -> list:
    """The panels of ``fig``, colour-bar axes left out."""
    return [ax for ax in fig.axes if getattr(ax, "_colorbar", None) is None]


def caption(fig) -> str:
    texts = [t.get_text() for t in fig.texts if t.get_gid() == CAPTION_GID]
    assert len(texts) == 1, "a figure has exactly one caption"
    return texts[0]


def assert_readable(fig) -> None:
    """Title, labelled axes on every panel, a colour bar or legend per panel, a caption."""
    assert fig.get_suptitle().strip()
    assert caption(fig).startswith("Look for:")
    panels = data_axes(fig)
    assert panels
    for ax in panels:
        assert ax.get_xlabel().strip() and ax.get_ylabel().strip(), ax.get_title()
        has_bar = any(
            getattr(artist, "colorbar", None) is not None
            for artist in [*ax.images, *ax.collections]
        )
        assert has_bar or ax.get_legend() is not None or fig.legends, ax.get_title()
    for ax in fig.axes:
        if getattr(ax, "_colorbar", None) is not None:
            bar = ax._colorbar.ax
            assert (bar.get_ylabel() or bar.get_xlabel()).strip(), "colour bars carry a label"


def block_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every ``import matplotlib...`` fail in this process, as if it were not installed."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
