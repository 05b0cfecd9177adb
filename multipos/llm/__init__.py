"""Positions for (multimodal) language models (extra ``hf``).

V2PE variable visual position increments (:func:`v2pe_positions`, :func:`v2pe_position_ids`),
Qwen2-VL M-RoPE position ids (:func:`mrope_positions`), HiRoPE hierarchical positions from
source code, and the Hugging Face adapters that feed them to a causal LM. The position builders
need only torch; ``transformers`` is used only by the models the adapters are applied to.
"""

from multipos.llm.packing import packed_attention_mask
from multipos.llm.v2pe import V2PE_TRAINING_DELTAS, v2pe_position_ids, v2pe_positions

__all__ = [
    "V2PE_TRAINING_DELTAS",
    "packed_attention_mask",
    "v2pe_position_ids",
    "v2pe_positions",
]
