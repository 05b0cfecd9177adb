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

__all__ = ["PRECISIONS", "StageConfig", "run_stage"]

PRECISIONS = ("fp32", "bf16")
#: Settings a resumed run may change (they do not alter the result).
RESUMABLE_CHANGES = ("checkpoint_every", "workers")


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
        accum_freq: Micro-batches of ``batch_size`` per optimizer step (gradients averaged;
            a contrastive loss still sees ``batch_size`` negatives per micro-batch).
        precision: ``"fp32"`` or ``"bf16"`` (autocast; weights and optimizer stay fp32).
        workers: DataLoader worker processes that read and decode items (0: in the loop).

    Raises:
        ValueError: If ``batch_size``, ``steps``, ``epochs`` or ``accum_freq`` is below 1,
            ``workers`` is negative, ``lr`` is not positive or ``precision`` is unknown.
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
    accum_freq: int = 1
    precision: str = "fp32"
    workers: int = 0

    def __post_init__(self) -> None:
        if self.accum_freq < 1:
            raise ValueError(f"accum_freq must be >= 1, got {self.accum_freq}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
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
    """Item indices of this rank's batch at global micro-batch ``step``."""
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
    per_step = config.batch_size * info.world_size * config.accum_freq
    return config.epochs * max(1, num_items // per_step)


class _StepBatches(torch.utils.data.Sampler[list[int]]):
    """The index lists of micro-batches ``start, start + 1, ...`` (for a DataLoader)."""

    def __init__(self, num_items: int, config: StageConfig, info: DistInfo, start: int, stop: int):
        self.args = (num_items, config, info)
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):  # type: ignore[no-untyped-def]
        for micro in range(self.start, self.stop):
            yield _batch_indices(*self.args, micro)


def _check_resume(
    state: dict[str, Any], stage: str, extra: dict[str, Any], config: StageConfig, checkpoint: Path
) -> None:
    if state.get("stage") != stage or state.get("extra") != extra:
        raise ValueError(
            f"checkpoint {checkpoint} belongs to another run (stage/spec differ): "
            f"{state.get('stage')!r} {state.get('extra')} vs {stage!r} {extra}"
        )
    saved, now = state.get("config", {}), asdict(config)
    changed = sorted(
        k for k in now if k not in RESUMABLE_CHANGES and k in saved and saved[k] != now[k]
    )
    if changed:
        details = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in changed)
        raise ValueError(
            f"checkpoint {checkpoint} was written with other settings ({details}); resume "
            "with the same settings or start a new run"
        )


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
    if num_items < config.batch_size * info.world_size:
        raise ValueError(
            f"stage {stage!r}: {num_items} items for a batch of {config.batch_size} x "
            f"{info.world_size} process(es); a batch would repeat items (false negatives in a "
            "contrastive loss): lower the batch size or add data"
        )
    total = _total_steps(num_items, config, info)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config, total))
    step, history = 0, []
    if resume and checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        _check_resume(state, stage, extra_state, config, checkpoint)
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
    accum = config.accum_freq
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=_StepBatches(num_items, config, info, step * accum, total * accum),
        num_workers=config.workers,
    )
    batches = iter(loader)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    while step < total:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=device)
        for _ in range(accum):
            with autocast:
                micro = loss_of_batch(wrapped, next(batches)).float() / accum
            micro.backward()  # type: ignore[no-untyped-call]
            loss = loss + micro.detach()
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
