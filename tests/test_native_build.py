"""The optional C modules are built wherever the install had a C compiler (as `make` and CI
do), so their tests and the benchmarks do not skip them unnoticed; without a compiler the
package still imports and the torch / numpy paths run."""

from __future__ import annotations

import os
import shutil
import sysconfig

import pytest

from multipos import group_native
from multipos.graph import small_kernels


def _compiler() -> str | None:
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc)


@pytest.mark.skipif(_compiler() is None, reason="no C compiler: the modules are optional")
@pytest.mark.skipif(os.environ.get("MULTIPOS_NATIVE") == "0", reason="turned off by the user")
def test_compiled_modules_are_built_and_enabled() -> None:
    assert group_native.available(), "multipos._group_kernels did not build (see pip's log)"
    assert small_kernels.available(), "multipos.graph._small_graphs did not build"


def test_the_switch_reads_the_environment() -> None:
    # available() is false when the module is missing or MULTIPOS_NATIVE=0 was set at import
    for module in (group_native, small_kernels):
        expected = module._kernels is not None and os.environ.get("MULTIPOS_NATIVE", "1") != "0"
        assert module.available() is expected
