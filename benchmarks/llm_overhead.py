"""Cost of V2PE / M-RoPE positions in Hugging Face language models (DESIGN.md budget 1.05x).

Forward time (eval, no grad, CPU) of small randomly initialised models built from configs:

* ``llama_v2pe``: :func:`multipos.llm.v2pe_position_ids` (delta 1/4) plus the forward of a
  ``LlamaForCausalLM`` adapted by :func:`multipos.llm.apply_llama_positions`, against the
  unmodified model's forward on the same tokens and attention mask (its own positions).
* ``qwen2_vl_mrope``: ``Qwen2VLForConditionalGeneration`` adapted by
  :func:`multipos.llm.apply_qwen2_vl_positions` (delta 1/4; positions built inside the
  forward by :func:`multipos.llm.mrope_positions`), against the unmodified model (its own
  ``get_rope_index``), same inputs (image and video placeholders, no pixels).

Both sides are run alternately in one process; medians. One JSON object per line.

    python benchmarks/llm_overhead.py [--repeats 21] [--length 1024] [--batch 2]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, time_alternating

from multipos.llm import (
    apply_llama_positions,
    apply_qwen2_vl_positions,
    v2pe_position_ids,
)

BUDGET = 1.05
IMG, VID, START, END = 900, 901, 902, 903
TEXT = {
    "vocab_size": 1000,
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "max_position_embeddings": 4096,
}


def _interleaved(batch: int, length: int, image_tokens: int, generator: torch.Generator) -> Any:
    """Token ids with an image of ``image_tokens`` placeholders after every 64 text tokens,
    first row left-padded by 16."""
    row: list[int] = []
    while len(row) < length:
        row += torch.randint(1, 800, (64,), generator=generator).tolist()
        row += [START, *[IMG] * image_tokens, END]
    ids = torch.tensor([row[:length]] * batch)
    mask = torch.ones_like(ids)
    mask[0, :16] = 0
    ids[0, :16] = 0
    return ids, mask


def _llama(batch: int, length: int, repeats: int) -> None:
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(**TEXT, pad_token_id=0)
    model = transformers.LlamaForCausalLM(config).eval()
    adapted = apply_llama_positions(copy.deepcopy(model))
    ids, mask = _interleaved(batch, length, 256, torch.Generator().manual_seed(0))

    def ours() -> None:
        with torch.no_grad():
            pos = v2pe_position_ids(ids, IMG, mask, delta=0.25)
            adapted(input_ids=ids, attention_mask=mask, position_ids=pos)

    def baseline() -> None:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)

    t_ours, t_base = time_alternating(ours, baseline, repeats=repeats, warmup=2)
    emit(
        "llm_overhead",
        "llama_v2pe",
        "forward_s",
        t_ours,
        t_base,
        budget=BUDGET,
        batch=batch,
        length=length,
        config=TEXT,
    )


def _qwen2_vl(batch: int, length: int, repeats: int) -> None:
    import transformers

    torch.manual_seed(0)
    text = {**TEXT, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}
    text["rope_parameters"]["mrope_section"] = [4, 6, 6]
    config = transformers.Qwen2VLConfig(
        text_config=text,
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 256, "num_heads": 2},
        image_token_id=IMG,
        video_token_id=VID,
        vision_start_token_id=START,
        vision_end_token_id=END,
    )
    model = transformers.Qwen2VLForConditionalGeneration(config).eval()
    adapted = apply_qwen2_vl_positions(copy.deepcopy(model), delta=0.25)
    # Images of 8 x 8 merged patches (a 16 x 16 patch grid), 64 placeholders each.
    ids, mask = _interleaved(batch, length, 64, torch.Generator().manual_seed(0))
    complete = length - (length % (64 + 66))  # whole images only
    ids, mask = ids[:, :complete], mask[:, :complete]
    images = int((ids == IMG).sum()) // 64
    inputs = {
        "input_ids": ids,
        "attention_mask": mask,
        "mm_token_type_ids": (ids == IMG).long(),
        "image_grid_thw": torch.tensor([[1, 16, 16]] * images),
    }

    def ours() -> None:
        with torch.no_grad():
            adapted(**inputs)

    def baseline() -> None:
        with torch.no_grad():
            model(**inputs)

    t_ours, t_base = time_alternating(ours, baseline, repeats=repeats, warmup=2)
    emit(
        "llm_overhead",
        "qwen2_vl_mrope",
        "forward_s",
        t_ours,
        t_base,
        budget=BUDGET,
        batch=batch,
        length=int(ids.shape[1]),
        images=images,
        config=TEXT,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    _llama(args.batch, args.length, args.repeats)
    _qwen2_vl(args.batch, args.length, args.repeats)


if __name__ == "__main__":
    main()
