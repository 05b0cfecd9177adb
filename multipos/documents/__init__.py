"""Position schemes for scanned forms (extra ``documents``).

Home of word graphs built from OCR boxes, reading order and ROPE reading-order codes
("ROPE: Reading Order Equivariant Positional Encoding for Graph-based Document Information
Extraction", Lee et al., ACL 2021, arXiv:2106.10786). Built on :mod:`multipos.graph`'s
utilities; nothing is exported yet.
"""
