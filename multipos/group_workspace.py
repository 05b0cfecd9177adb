"""Attention's reused buffers for the GTA transforms of q, k and v outside autograd, and the
keys and values transformed together in one of them. Used by :mod:`multipos.groups`; nothing
here is public.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import Tensor

from multipos import group_native
from multipos.group_sections import _Matrices, _Mode, _Rotations, write_sections


def scratch_buffer(
    workspace: dict[tuple[Any, ...], Tensor], role: str, x: Tensor, heads: int = 0
) -> Tensor:
    """A buffer like ``x`` for attention's transformed q, k or v (``role``), kept in
    ``workspace`` for the next call; with ``heads``, a contiguous one with that many heads
    (k and v side by side). Measured (one thread, 2 x 6 x 256 x 64, SE(3) + SO(2)): a fresh
    buffer per transform made GTA attention 0.5-1 ms slower than one reused buffer, the fresh
    pages being faulted in and cold in cache. Only for grad disabled (nothing saves the tensor
    for a backward), one per thread; the workspace lives as long as its representation (one
    forward)."""
    inference = torch.is_inference_mode_enabled()
    key = (role, x.shape, x.stride(), x.dtype, x.device, inference, threading.get_ident(), heads)
    buffer = workspace.get(key)
    if buffer is None:
        shape = (x.shape[0], heads, *x.shape[2:])
        buffer = torch.empty_like(x) if not heads else x.new_empty(shape)
        workspace[key] = buffer
    return buffer


def keys_values(
    workspace: dict[tuple[Any, ...], Tensor],
    tables: dict[tuple[Any, ...], Any],
    sections: tuple[_Rotations | _Matrices, ...],
    k: Tensor,
    v: Tensor,
    whole: bool,
) -> tuple[Tensor, Tensor]:
    r""":math:`\rho k` and :math:`\rho v` for attention outside autograd (``k``, ``v`` alike,
    ``(B, H, S, D)``): both copied side by side into one reused buffer ``(B, 2H, S, D)`` and
    transformed there in one pass of every section (one product per section instead of two;
    measured, one thread, 2 x 6 x 256 x 64, SE(3) + SO(2): GTA attention 1.245x plain SDPA
    against 1.269x with the two transformed apart). With the compiled kernel (not for
    ``whole``, one SO(2) section over the head) each is written into its half in one pass,
    with no copy first. Returns the two halves, views that SDPA reads in place; they hold
    until the next call with this workspace."""
    heads = k.shape[1]
    buffer = scratch_buffer(workspace, "kv", k, 2 * heads)
    keys, values = buffer[:, :heads], buffer[:, heads:]
    if not whole and group_native.write(tables, sections, "rho", k, keys):
        group_native.write(tables, sections, "rho", v, values)
        return keys, values
    buffer[:, :heads].copy_(k)
    buffer[:, heads:].copy_(v)
    write_sections(buffer, sections, "rho", buffer)
    return buffer[:, :heads], buffer[:, heads:]


def transform_into(
    tables: dict[tuple[Any, ...], Any],
    sections: tuple[_Rotations | _Matrices, ...],
    mode: _Mode,
    x: Tensor,
    dest: Tensor,
    whole: bool,
    covered: int,
) -> Tensor:
    """Write ``rho x`` (in ``mode``) into ``dest`` (may be ``x``) and return it: by the
    compiled kernel in one pass where it applies (not for ``whole``, one SO(2) section over
    the head, which stays RoPE's complex product bit for bit), else section by section;
    channels from ``covered`` on are copied."""
    if not whole and group_native.write(tables, sections, mode, x, dest):
        return dest
    if dest is not x and not whole:
        # The sections read a few channels of every row each: one streaming copy of the
        # whole tensor, then every section in place while the copy is in cache. Measured
        # (SE(3) + SO(2), 2 x 6 x 256 x 64, one thread, inside attention): 1.27-1.28x plain
        # SDPA against 1.35-1.42x reading the sections straight from x.
        x = dest.copy_(x)
    write_sections(x, sections, mode, dest)
    if dest is not x and covered < x.shape[-1]:
        dest[..., covered:].copy_(x[..., covered:])
    return dest
