"""Positions for (multimodal) language models (extra ``hf``).

V2PE variable visual position increments (:func:`v2pe_positions`, :func:`v2pe_position_ids`),
Qwen2-VL M-RoPE position ids (:func:`mrope_positions`), HiRoPE hierarchical positions from
source code, and the Hugging Face adapters that feed them to a causal LM. The position builders
need only torch; ``transformers`` is used only by the models the adapters are applied to.
"""

from multipos.llm.code_hierarchy import CodeHierarchy, CodeSpan, code_hierarchy
from multipos.llm.hf_hirope import HiRoPEHandle, apply_hirope, hirope_continuation
from multipos.llm.hf_llama import apply_llama_positions
from multipos.llm.hf_qwen2_vl import apply_qwen2_vl_positions, mrope_continuation
from multipos.llm.hf_rotary import Continuation, HFRotaryEmbedding, v2pe_continuation
from multipos.llm.hirope import (
    HierarchicalRotaryEmbedding,
    hirope_positions,
    hirope_sections,
    window_logits,
)
from multipos.llm.mrope import MRopePositions, mrope_positions
from multipos.llm.packing import packed_attention_mask
from multipos.llm.v2pe import V2PE_TRAINING_DELTAS, v2pe_position_ids, v2pe_positions

__all__ = [
    "V2PE_TRAINING_DELTAS",
    "CodeHierarchy",
    "CodeSpan",
    "Continuation",
    "HFRotaryEmbedding",
    "HiRoPEHandle",
    "HierarchicalRotaryEmbedding",
    "MRopePositions",
    "apply_hirope",
    "apply_llama_positions",
    "apply_qwen2_vl_positions",
    "code_hierarchy",
    "hirope_continuation",
    "hirope_positions",
    "hirope_sections",
    "mrope_continuation",
    "mrope_positions",
    "packed_attention_mask",
    "v2pe_continuation",
    "v2pe_position_ids",
    "v2pe_positions",
    "window_logits",
]
