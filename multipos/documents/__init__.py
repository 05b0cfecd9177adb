r"""Position schemes for scanned forms (extra ``documents``): word graphs, reading order, ROPE.

From "ROPE: Reading Order Equivariant Positional Encoding for Graph-based Document Information
Extraction" (Lee, Li, Wang, Hua, Fujii, Popat, 2021, arXiv:2106.10786). Built on
:mod:`multipos.graph`'s utilities.

Pure functions: :func:`word_graph` (box-level beta-skeleton or kNN over OCR boxes),
:func:`reading_order` (``given``, ``raster``, ``xycut``), :func:`rope_codes`, the feature
functions :func:`text_features`, :func:`box_features`, and :func:`synthetic_form`. Module,
registered as ``reading_order_code_embedding``: :class:`ReadingOrderCodeEmbedding`. PyG
transform: :class:`AddReadingOrderPE`. Data: :func:`load_funsd` reads a local FUNSD copy
(research use only; never shipped), with the EC-FUNSD reference reading order.
"""

from __future__ import annotations

import torch_geometric  # noqa: F401  (fail early with ImportError when the extra is missing)

from multipos.documents import schemes as _schemes  # noqa: F401  (registers the scheme)
from multipos.documents.embedding import ReadingOrderCodeEmbedding, code_sinusoids
from multipos.documents.features import box_features, text_features
from multipos.documents.funsd import FUNSD_LABELS, load_funsd, reference_rank
from multipos.documents.reading_order import READING_ORDERS, rank_from_order, reading_order
from multipos.documents.rope import CODE_CONVENTIONS, rope_codes
from multipos.documents.synthetic import SyntheticForm, synthetic_form
from multipos.documents.transforms import AddReadingOrderPE
from multipos.documents.word_graph import WORD_GRAPHS, word_graph

__all__ = [
    "CODE_CONVENTIONS",
    "FUNSD_LABELS",
    "READING_ORDERS",
    "WORD_GRAPHS",
    "AddReadingOrderPE",
    "ReadingOrderCodeEmbedding",
    "SyntheticForm",
    "box_features",
    "code_sinusoids",
    "load_funsd",
    "rank_from_order",
    "reading_order",
    "reference_rank",
    "rope_codes",
    "synthetic_form",
    "text_features",
    "word_graph",
]
