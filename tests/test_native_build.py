"""The optional C modules are built wherever the install had a C compiler (as `make` and CI
do), so their tests and the benchmarks do not skip them unnoticed; without a compiler the
package still imports and the torch / numpy paths run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


def test_the_environment_variable_turns_both_off() -> None:
    code = (
        "from multipos import group_native; from multipos.graph import small_kernels; "
        "print(group_native.available(), small_kernels.available())"
    )
    env = {**os.environ, "MULTIPOS_NATIVE": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False"]
