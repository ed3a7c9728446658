"""The element types the suite names, and their sizes: the one table bench, analysis and the cost model read.

Names are torch's (``torch.float32`` is "float32"); no torch import, so option tables and sweep planning stay
light. ``ACCUMULATE`` is the dtype partial results are kept in (``ringx.kernels.acc_dtype``: float32 for 16-bit
inputs), which ``tests/test_store.py`` holds equal to the library's.
"""

from __future__ import annotations

ELEMENT_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2}
DTYPES = tuple(ELEMENT_BYTES)  # what --dtype takes, CPU types first
ACCUMULATE = {"float32": "float32", "float64": "float64", "bfloat16": "float32", "float16": "float32"}


def element_bytes(dtype: str) -> int:
    """Bytes of one element of ``dtype`` (a name of DTYPES)."""
    return ELEMENT_BYTES[dtype]


def accumulate_bytes(dtype: str) -> int:
    """Bytes of one element of the dtype partial results of ``dtype`` inputs are accumulated in."""
    return ELEMENT_BYTES[ACCUMULATE[dtype]]
