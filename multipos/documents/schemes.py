"""Registration of the documents scheme: the ROPE code embedding.

The module class registers itself, so its signature is the one list of keywords and
defaults (``create_scheme`` reads it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from multipos.documents.embedding import ReadingOrderCodeEmbedding
from multipos.documents.reading_order import reading_order
from multipos.documents.rope import rope_codes
from multipos.documents.synthetic import synthetic_form
from multipos.documents.word_graph import word_graph
from multipos.registry import register_scheme

__all__: list[str] = []

ROPE_PAPER = (
    "ROPE: Reading Order Equivariant Positional Encoding for Graph-based Document Information "
    "Extraction (Lee, Li, Wang, Hua, Fujii, Popat, 2021, arXiv:2106.10786)"
)


def _code_inputs(module: nn.Module, generator: torch.Generator) -> tuple[Tensor]:
    """ROPE codes of a small synthetic form's beta-skeleton in raster order, ``(E,)``."""
    assert isinstance(module, ReadingOrderCodeEmbedding)
    form = synthetic_form(generator, rows=2, columns=2)
    edge_index = word_graph(form.boxes)
    return (rope_codes(edge_index, reading_order(form.boxes, "raster")),)


register_scheme(
    "reading_order_code_embedding",
    ReadingOrderCodeEmbedding,
    paper=ROPE_PAPER,
    summary="Sinusoidal embedding (optionally projected) of ROPE reading-order codes per edge",
    tiny={"dim": 8, "out_dim": 8},
    sample_inputs=_code_inputs,
    domain="documents",
)
