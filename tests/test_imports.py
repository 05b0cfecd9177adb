"""`import multipos` stays cheap: no framework is imported by the core."""

from __future__ import annotations

import json
import subprocess
import sys

# matplotlib (the [plot] extra) is imported only when a figure is drawn.
FRAMEWORKS = (
    "timm",
    "open_clip",
    "torch_geometric",
    "scipy",
    "transformers",
    "torchvision",
    "matplotlib",
)


def test_core_import_pulls_no_framework() -> None:
    code = (
        "import sys, json, multipos, multipos.plot; multipos.list_schemes(); "
        f"print(json.dumps([m for m in {list(FRAMEWORKS)!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []
