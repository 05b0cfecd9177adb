"""Positions for (multimodal) language models (extra ``llm``).

Home of V2PE variable visual position increments, M-RoPE position ids, HiRoPE hierarchical
positions from source code and the Hugging Face adapters that feed them to a causal LM. Built
on the core rotary embedding and position builders; nothing is exported yet.
"""
