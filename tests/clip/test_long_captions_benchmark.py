"""The synthetic captions of ``benchmarks/clip_long_captions.py`` and its ``--quick`` run (slow:
trains 12 small models)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "clip_long_captions.py"


def _script() -> ModuleType:
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("clip_long_captions", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_long_captions_put_the_ordered_colours_at_tokens_150_to_240() -> None:
    bench = _script()
    tok = open_clip.get_tokenizer("ViT-B-32", context_length=bench.LENGTH)
    g = torch.Generator().manual_seed(0)
    images, long, short, mirror = bench.test_set(g)
    assert images.shape == (32, 3, 32, 32) and len(long) == len(short) == 32
    low, high = bench.detail_positions([(images, long, short, mirror)], tok)
    assert bench.DETAIL[0] <= low and high <= bench.DETAIL[1]
    ids = tok(long)
    tok77 = open_clip.get_tokenizer("ViT-B-32")
    assert bool((ids[:, -1] == 0).all())  # nothing cut: every caption ends before N
    for i, j in enumerate(mirror):
        # A caption and its mirror's: the same words, the colours in the other order.
        detail_i = long[i].split(" . ")[2]
        detail_j = long[j].split(" . ")[2]
        assert sorted(detail_i.split()) == sorted(detail_j.split()) and detail_i != detail_j
        assert int(tok77([short[i]])[0].count_nonzero()) < 77


def test_variants_are_the_combinations_the_command_accepts() -> None:
    bench = _script()
    for method, recipe in bench.VARIANTS:
        opts = bench.settled(method, recipe)
        assert opts.method == method
        assert (opts.distill_data is not None) == (recipe != "long-clip")
    assert bench.settled("kps", "long-clip").frozen_rows == 20
    assert bench.settled("rope", "tulip").projection == "teacher"
    with pytest.raises(ValueError, match="do not apply"):
        bench.settled("rope", "long-clip")


@pytest.mark.slow
def test_quick_run_prints_every_seed_variant_summary_and_table(capsys) -> None:
    bench = _script()
    bench.main(["--quick"])
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    per_seed = [r for r in rows if r["metric"] == "long_t2i_recall@1"]
    summary = [r for r in rows if r["metric"] == "long_t2i_recall@1_mean"]
    assert sorted((r["method"], r["recipe"], r["seed"]) for r in per_seed) == sorted(
        (m, rec, s) for m, rec in bench.VARIANTS for s in range(2)
    )
    assert [(r["method"], r["recipe"]) for r in summary] == list(bench.VARIANTS)
    for r in rows:
        assert r["bench"] == "clip_long_captions" and "machine" in r
        assert r["case"] == f"{r['method']}/{r['recipe']}"
        assert 0.0 <= r["ours"] <= 100.0 and 0.0 < r["baseline"] <= 100.0
        assert math.isclose(r["ratio"], r["ours"] / r["baseline"])
    for s in summary:
        values = [r["ours"] for r in per_seed if r["case"] == s["case"]]
        assert math.isclose(s["ours"], sum(values) / 2)
        assert math.isclose(s["std"], abs(values[0] - values[1]) / math.sqrt(2), abs_tol=1e-9)
        assert -1.0 <= s["short_cos_mean"] <= 1.0
    assert all((r["stage1_long_t2i_r1"] is None) == (r["recipe"] == "long-clip") for r in per_seed)
    table = out[out.index("tower") :]
    for name in ("original @77", "rope untrained", *(f"{m}/{r}" for m, r in bench.VARIANTS)):
        assert name in table
