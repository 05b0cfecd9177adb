r"""The training loop shared by the CLIP stages: AdamW, warm-up + cosine, DDP, checkpoints.

A stage (:mod:`multipos.clip.stages`) supplies the parameters to train, a dataset and the loss
of one batch; :func:`run_stage` does the rest. Batches are drawn from an explicit per-epoch
permutation seeded by ``seed + epoch``, so a run resumed from its checkpoint sees the same
batches as an uninterrupted one. The learning rate warms up linearly over ``warmup`` steps,
then follows a cosine decay to 0 (SGDR, Loshchilov & Hutter, 2017, arXiv:1608.03983):

.. math::
    \eta_t = \eta \cdot \tfrac12\Big(1 + \cos\big(\pi \tfrac{t - w}{T - w}\big)\Big),
    \quad t \ge w
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from multipos.clip.distributed import DistInfo, barrier

__all__ = ["StageConfig", "run_stage"]


@dataclass
class StageConfig:
    """Hyper-parameters of one training stage.

    Attributes:
        epochs: Passes over the data (ignored when ``steps`` is set).
        steps: Optimizer steps in total (overrides ``epochs``).
        batch_size: Per-process batch size.
        lr: Peak AdamW learning rate (TULIP: 5e-4 for stage 1, 1e-5 for stage 2).
        weight_decay: AdamW weight decay (TULIP: 0.1).
        warmup: Linear warm-up steps, then cosine decay to 0.
        grad_clip: Gradient-norm clip (``None``: off).
        seed: Seed of the batch order.
        checkpoint_every: Write a checkpoint every this many steps (0: only at the end).

    Raises:
        ValueError: If ``batch_size``, ``steps`` or ``epochs`` is below 1 or ``lr`` is not
            positive.
    """

    epochs: int = 1
    steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.1
    warmup: int = 0
    grad_clip: float | None = 1.0
    seed: int = 0
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


@functools.lru_cache(maxsize=1)
def _epoch_order(num_items: int, seed: int, repeats: int) -> Tensor:
    """The permutation of one epoch (seeded by ``seed``), repeated; built once per epoch."""
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))
    return order.repeat(repeats)


def _batch_indices(num_items: int, config: StageConfig, info: DistInfo, step: int) -> list[int]:
    """Item indices of this rank's batch at global ``step``."""
    per_step = config.batch_size * info.world_size
    steps_per_epoch = max(1, num_items // per_step)
    epoch, within = divmod(step, steps_per_epoch)
    # Small data: repeat the permutation so every rank always gets a full batch.
    repeats = math.ceil(steps_per_epoch * per_step / num_items)
    order = _epoch_order(num_items, config.seed + epoch, repeats)
    start = within * per_step + info.rank * config.batch_size
    return order[start : start + config.batch_size].tolist()


def _total_steps(num_items: int, config: StageConfig, info: DistInfo) -> int:
    if config.steps is not None:
        return config.steps
    return config.epochs * max(1, num_items // (config.batch_size * info.world_size))


def _schedule(config: StageConfig, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        span = max(1, total - config.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - config.warmup) / span)))

    return factor


def _set_trainable(model: nn.Module, names: Sequence[str]) -> list[nn.Parameter]:
    wanted = set(names)
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(name in wanted)
        if name in wanted:
            params.append(p)
    return params


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def run_stage(
    *,
    stage: str,
    model: nn.Module,
    trainable: Sequence[str],
    ddp_module: nn.Module,
    dataset: torch.utils.data.Dataset[Any],
    loss_of_batch: Callable[[nn.Module, Any], Tensor],
    config: StageConfig | None,
    info: DistInfo,
    checkpoint: str | Path | None,
    resume: bool,
    progress: bool,
    extra_state: dict[str, Any],
) -> list[float]:
    """Train the ``trainable`` parameters of ``model`` on ``dataset`` for one stage.

    Args:
        stage: Stage name (progress bar, and checked on resume).
        model: The model whose parameters are trained (in place; eval mode on return, every
            parameter trainable again).
        trainable: Names of the parameters to train; the others are frozen during the stage.
        ddp_module: The module whose ``forward`` the loss calls (wrapped in
            ``DistributedDataParallel`` when ``info.world_size > 1``).
        dataset: Items collated into batches by ``default_collate``.
        loss_of_batch: ``(module, batch) -> scalar loss``; ``module`` is the (wrapped)
            ``ddp_module``.
        config: Hyper-parameters (default :class:`StageConfig`).
        info: Distributed info.
        checkpoint: Checkpoint file (written by rank 0 every ``config.checkpoint_every`` steps
            and at the end), or ``None``.
        resume: Continue from ``checkpoint`` if it exists.
        progress: Show a tqdm bar on rank 0.
        extra_state: Stored in the checkpoint; a resume must find the same.

    Returns:
        The loss of every step (averaged over ranks), resumed steps included.

    Raises:
        ValueError: If nothing is trainable or the checkpoint belongs to another run.
    """
    config = config or StageConfig()
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    device = next(model.parameters()).device
    params = _set_trainable(model, trainable)
    if not params:
        raise ValueError(f"stage {stage!r}: nothing to train")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    num_items = len(dataset)  # type: ignore[arg-type]
    total = _total_steps(num_items, config, info)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, total))
    step, history = 0, []
    if resume and checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        if state.get("stage") != stage or state.get("extra") != extra_state:
            raise ValueError(
                f"checkpoint {checkpoint} belongs to another run (stage/spec differ): "
                f"{state.get('stage')!r} {state.get('extra')} vs {stage!r} {extra_state}"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history = int(state["step"]), list(state["history"])

    wrapped: nn.Module = ddp_module
    if info.world_size > 1:
        wrapped = DistributedDataParallel(
            ddp_module, device_ids=[device.index] if device.type == "cuda" else None
        )

    def save() -> None:
        if checkpoint is not None and info.main:
            _atomic_save(
                {
                    "stage": stage,
                    "step": step,
                    "total": total,
                    "history": history,
                    "extra": extra_state,
                    "config": asdict(config),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                },
                checkpoint,
            )
        barrier(info)

    bar = tqdm(
        total=total, initial=step, desc=stage, disable=not (progress and info.main), leave=False
    )
    model.train()
    while step < total:
        indices = _batch_indices(num_items, config, info, step)
        batch = torch.utils.data.default_collate([dataset[i] for i in indices])
        loss = loss_of_batch(wrapped, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        value = float(loss.detach())
        if info.world_size > 1:
            reduced = torch.tensor([value], device=device)
            dist.all_reduce(reduced)
            value = float(reduced) / info.world_size
        history.append(value)
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}")
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < total:
            save()
    bar.close()
    save()
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return history
