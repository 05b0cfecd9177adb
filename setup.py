"""Build of the optional C kernel (GTA transforms); everything else is in pyproject.toml.

The extension is optional: without a C compiler the install succeeds and the torch
operations run instead (``multipos.group_native.available()`` says which).
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
        )
    ]
)
