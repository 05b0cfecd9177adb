import importlib
import os

import pytest
import torch
from hypothesis import settings

# Tiny models run far faster on one thread, and CI machines have only two cores.
torch.set_num_threads(1)

# The default run is offline: a test that reaches for the Hugging Face Hub fails at once
# instead of downloading. Subprocesses started by tests inherit these.
for _key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_key, "1")

# CI replays a fixed set of examples so that a run is reproducible; local runs explore.
settings.register_profile(
    "multipos", max_examples=40, deadline=None, derandomize=bool(os.environ.get("CI"))
)
settings.load_profile("multipos")

DOMAINS = ("vision", "graph", "documents")


def import_domains() -> list[str]:
    """Import every domain whose framework is installed, so its schemes are registered."""
    loaded = []
    for d in DOMAINS:
        try:
            importlib.import_module(f"multipos.{d}")
        except ImportError:
            continue
        loaded.append(d)
    return loaded


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)
