"""Length extrapolation of a tiny code LM: plain RoPE, NTK, YaRN and HiRoPE (CPU).

"HiRoPE: Length Extrapolation for Code Models Using Hierarchical Position" (Zhang et al., ACL
2024, arXiv:2403.19115) claims that swapping RoPE's flat positions for (token-in-block,
block) positions lets a code LM read far past its training length without training. This
script checks that claim at toy scale, offline:

* data: the Python files of this interpreter's standard library (``sysconfig``'s ``stdlib``),
  split by file (about one file in ten held out), read as characters (ASCII code points, others
  mapped to 0): a character tokenizer whose offsets are ``(i, i + 1)``;
* model: ``transformers.LlamaForCausalLM`` from a tiny ``LlamaConfig``, random init, trained at
  context 256 with plain RoPE (and, as a second model, with HiRoPE positions);
* evaluation: perplexity of the first ``L`` characters of held-out files, for ``L`` in 256, 512,
  1024, 2048, with: plain RoPE; static NTK-aware and YaRN scaling with factor ``L / 256``
  (both from ``multipos.frequencies``, written into the model's rotary ``inv_freq`` /
  ``attention_scaling``); HiRoPE swapped in training-free (``apply_hirope``, without and with
  flat windows of 128 and 256 tokens: ``hirope_w128``, ``hirope_w256``); and the model
  trained with HiRoPE (``hirope_trained``).

One JSON object per line (``ours`` = perplexity, ``baseline`` = plain RoPE's at the same seed
and length, ``ratio`` = ours / baseline), a summary line per method and length (mean over
seeds), then a table.

    python benchmarks/hirope_extrapolation.py [--quick] [--seeds 3] [--steps 300] [--threads 2]
        [--windows 128 256]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import sysconfig
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_row

from multipos.frequencies import FrequencyScaling, scaled_inv_freq
from multipos.llm.code_hierarchy import code_hierarchy
from multipos.llm.hf_hirope import apply_hirope
from multipos.llm.hirope import hirope_positions

BENCH = "hirope_extrapolation"
TRAIN_LENGTH = 256
VOCAB = 128
BASE = 10000.0
SCALINGS = {"rope_ntk": "ntk", "rope_yarn": "yarn"}


def methods(windows: list[int]) -> list[str]:
    """Case names: ``hirope_w<w>`` is HiRoPE swapped in with a flat window of ``w`` tokens."""
    return ["rope", *SCALINGS, "hirope", *(f"hirope_w{w}" for w in windows), "hirope_trained"]


@dataclass
class Sample:
    """One source file: character ids and HiRoPE positions ``(2, n)``."""

    name: str
    ids: Tensor
    positions: Tensor


def encode(text: str) -> Tensor:
    """Character tokenizer: ASCII code points, anything else 0."""
    data = text.encode("ascii", errors="replace").replace(b"?", b"?")
    ids = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(torch.long)
    if not text.isascii():  # replaced characters no longer line up: map per character
        ids = torch.tensor([ord(c) if ord(c) < VOCAB else 0 for c in text], dtype=torch.long)
    return ids


def load(path: Path) -> Sample:
    text = path.read_text(encoding="utf-8", errors="replace")
    n = len(text)
    offsets = torch.stack((torch.arange(n), torch.arange(1, n + 1)), dim=1)
    positions = hirope_positions(code_hierarchy(text), offsets, levels=2)
    return Sample(path.name, encode(text), positions)


def corpus(
    train_files: int, eval_files: int, eval_length: int
) -> tuple[list[Sample], list[Sample]]:
    """Train and held-out files of the stdlib (held out: crc32(name) % 10 == 0)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = sorted(p for p in root.glob("*.py") if 4_000 <= p.stat().st_size <= 200_000)
    held = [p for p in paths if zlib.crc32(p.name.encode()) % 10 == 0]
    train = [p for p in paths if zlib.crc32(p.name.encode()) % 10 != 0]
    held = [p for p in held if p.stat().st_size > eval_length + 1][:eval_files]
    return [load(p) for p in train[:train_files]], [load(p) for p in held]


def tiny_llama(seed: int, hidden: int, layers: int) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=TRAIN_LENGTH,
        rope_parameters={"rope_type": "default", "rope_theta": BASE},
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def window(sample: Sample, start: int, length: int) -> tuple[Tensor, Tensor]:
    ids = sample.ids[start : start + length]
    pos = sample.positions[:, start : start + length]
    return ids, pos - pos[:, :1]  # only per-level offsets matter: start every level at 0


def batches(
    train: list[Sample], batch: int, generator: torch.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    weights = torch.tensor([float(len(s.ids) - TRAIN_LENGTH) for s in train])
    while True:
        files = torch.multinomial(weights, batch, replacement=True, generator=generator)
        pairs = []
        for f in files.tolist():
            top = len(train[f].ids) - TRAIN_LENGTH
            start = int(torch.randint(0, top, (1,), generator=generator))
            pairs.append(window(train[f], start, TRAIN_LENGTH))
        yield torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs], dim=1)


def nll(model: torch.nn.Module, ids: Tensor, positions: Tensor | None) -> Tensor:
    logits = model(input_ids=ids, position_ids=positions).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1), reduction="none"
    ).view(ids.shape[0], -1)


def train(
    model: torch.nn.Module,
    data: list[Sample],
    hierarchical: bool,
    steps: int,
    seed: int,
    batch: int,
) -> float:
    generator = torch.Generator().manual_seed(seed)
    handle = apply_hirope(model) if hierarchical else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, 3e-3, total_steps=steps, pct_start=0.1
    )
    model.train()
    stream = batches(data, batch, generator)
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        ids, pos = next(stream)
        loss = nll(model, ids, pos if hierarchical else None).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            print(
                f"# seed {seed} {'hirope' if hierarchical else 'rope'} step {step} "
                f"loss {loss.item():.3f}",
                file=sys.stderr,
                flush=True,
            )
    if handle is not None:
        handle.remove()
    model.eval()
    return float(loss.detach())


@contextmanager
def scaled(model: torch.nn.Module, kind: str, factor: float) -> Iterator[None]:
    """Write a ``multipos.frequencies`` scaling into the model's rotary frequencies."""
    rotary = model.model.rotary_emb
    saved = rotary.inv_freq.clone(), rotary.attention_scaling
    if factor > 1:
        scaling = FrequencyScaling(kind=kind, factor=factor, original_length=TRAIN_LENGTH)  # type: ignore[arg-type]
        head_dim = 2 * rotary.inv_freq.shape[-1]
        rotary.inv_freq.copy_(scaled_inv_freq(head_dim, BASE, scaling))
        rotary.attention_scaling = scaling.magnitude
    try:
        yield
    finally:
        rotary.inv_freq.copy_(saved[0])
        rotary.attention_scaling = saved[1]


@torch.no_grad()
def perplexity(model: torch.nn.Module, held: list[Sample], length: int, method: str) -> float:
    handle = None
    if method.startswith("hirope"):
        size = int(method.removeprefix("hirope_w")) if method.startswith("hirope_w") else None
        handle = apply_hirope(model, window=size)
    kind = SCALINGS.get(method)
    total, count = 0.0, 0
    with scaled(model, kind or "none", length / TRAIN_LENGTH if kind else 1.0):
        for i in range(0, len(held), 2):
            group = [window(s, 0, length) for s in held[i : i + 2]]
            ids = torch.stack([g[0] for g in group])
            pos = torch.stack([g[1] for g in group], dim=1) if handle is not None else None
            losses = nll(model, ids, pos)
            total += float(losses.sum())
            count += losses.numel()
    if handle is not None:
        handle.remove()
    return math.exp(total / count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: seconds")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument(
        "--windows", type=int, nargs="*", default=[128, 256], help="flat windows of hirope_w<w>"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads (1 on a machine shared with others)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        seeds, steps, lengths, hidden, layers, batch = 1, 3, (256, 512), 32, 1, 4
        train_files, eval_files = 8, 4
    else:
        seeds, steps, lengths = args.seeds, args.steps, (256, 512, 1024, 2048)
        hidden, layers, batch, train_files, eval_files = 64, 2, 8, 150, 8
    clock = time.perf_counter()
    data, held = corpus(train_files, eval_files, max(lengths))
    print(
        f"# {len(data)} train files, {len(held)} held-out files "
        f"({time.perf_counter() - clock:.1f} s)",
        file=sys.stderr,
        flush=True,
    )
    results: dict[tuple[str, int], list[float]] = {}
    cases = methods(args.windows)
    for seed in range(seeds):
        models = {}
        for hierarchical in (False, True):
            model = tiny_llama(seed, hidden, layers)
            train(model, data, hierarchical, steps, seed, batch)
            models[hierarchical] = model
        for length in lengths:
            baseline = perplexity(models[False], held, length, "rope")
            for method in cases:
                model = models[method == "hirope_trained"]
                name = "hirope" if method == "hirope_trained" else method
                ppl = baseline if method == "rope" else perplexity(model, held, length, name)
                results.setdefault((method, length), []).append(ppl)
                emit_row(
                    {
                        "bench": BENCH,
                        "case": method,
                        "metric": "perplexity",
                        "length": length,
                        "seed": seed,
                        "ours": ppl,
                        "baseline": baseline,
                        "ratio": ppl / baseline,
                        "train_length": TRAIN_LENGTH,
                        "steps": steps,
                    }
                )
        print(
            f"# seed {seed} done ({time.perf_counter() - clock:.0f} s)", file=sys.stderr, flush=True
        )
    for (method, length), values in sorted(
        results.items(), key=lambda kv: (cases.index(kv[0][0]), kv[0][1])
    ):
        base = statistics.mean(results[("rope", length)])
        emit_row(
            {
                "bench": BENCH,
                "case": method,
                "metric": "perplexity_mean",
                "length": length,
                "seeds": len(values),
                "ours": statistics.mean(values),
                "baseline": base,
                "ratio": statistics.mean(values) / base,
                "spread": max(values) - min(values),
            }
        )
    header = "| method | " + " | ".join(f"L={n}" for n in lengths) + " |"
    print(header)
    print("|" + "---|" * (len(lengths) + 1))
    for method in cases:
        cells = [f"{statistics.mean(results[(method, n)]):.2f}" for n in lengths]
        print(f"| {method} | " + " | ".join(cells) + " |")
    print(f"# total {time.perf_counter() - clock:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
