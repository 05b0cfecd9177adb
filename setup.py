"""Build of the optional C modules; everything else is in pyproject.toml.

- ``multipos._group_kernels``: GTA transforms in one pass (``multipos.group_native``);
- ``multipos.graph._small_graphs``: the per-graph PEs of small graphs outside the
  eigensolver (``multipos.graph.small_kernels``).

Both are optional: without a C compiler the install succeeds and the torch / numpy operations
run instead, with the same results (``available()`` in either module says which).
"""

import sys

from setuptools import Extension, setup

_ARGS = [] if sys.platform == "win32" else ["-O3", "-ffp-contract=off", "-Wno-psabi"]

setup(
    ext_modules=[
        Extension(
            "multipos._group_kernels",
            sources=["multipos/_native/group_kernels.c"],
            extra_compile_args=_ARGS,
            optional=True,
        ),
        Extension(
            "multipos.graph._small_graphs",
            sources=["multipos/_native/small_graphs.c"],
            extra_compile_args=_ARGS,
            optional=True,
        ),
    ]
)
