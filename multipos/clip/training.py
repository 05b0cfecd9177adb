r"""TULIP's two training stages for an upgraded open_clip text tower, with DDP and resume.

From "TULIP: Token-length Upgraded CLIP" (Najdenkoska et al., ICLR 2025, arXiv:2410.10034):

* **Stage 1, distillation** (:func:`distill_text_tower`): the original tower (teacher, frozen)
  and the upgraded tower (student) read the same first ``L0 = 77`` tokens of each caption; the
  loss is the cosine distance of the projected, pooled text embeddings

  .. math::
      \mathcal{L}_1 = \frac{1}{B} \sum_b \Big(1 - \cos\big(f_T(t_b^{\le L_0}),\,
      f_S(t_b^{\le L_0})\big)\Big)

  The student's text projection is trained and **kept** (TULIP's released stage 2 discards it).
* **Stage 2, long captions** (:func:`finetune_long_captions`): the CLIP contrastive loss
  (Radford et al., 2021, arXiv:2103.00020) on (image, long caption) pairs read at ``N``
  tokens; the image tower can be locked.

Both stages run under ``torchrun --nproc_per_node=K`` with ``DistributedDataParallel`` (gloo on
CPU, NCCL on CUDA), show tqdm progress bars on rank 0, write periodic checkpoints and resume
from them. Batches are drawn from an explicit per-epoch permutation seeded by ``seed + epoch``,
so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import csv
import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import open_clip
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from multipos.clip.upgrade import TextContextSpec, text_context_spec, trim_tokens

__all__ = [
    "IMAGE_SUFFIXES",
    "DistInfo",
    "StageConfig",
    "distill_text_tower",
    "finetune_long_captions",
    "init_distributed",
    "read_captions",
    "read_pairs",
    "text_parameters",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


# ------------------------------------------------------------------------------------- data


def read_captions(
    path: str | Path, *, caption_key: str = "title", separator: str = "\t"
) -> list[str]:
    """Captions from a ``.txt`` file (one per non-empty line) or an open_clip-style CSV.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the CSV lacks ``caption_key`` or no caption is found.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file not found: {path}")
    if path.suffix.lower() in (".csv", ".tsv"):
        captions = [caption for _, caption in _read_csv(path, None, caption_key, separator)]
    else:
        captions = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not captions:
        raise ValueError(f"no captions in {path}")
    return captions


def _read_csv(
    path: Path, img_key: str | None, caption_key: str, separator: str
) -> list[tuple[str, str]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f, delimiter=separator)
        columns = reader.fieldnames or []
        needed = [k for k in (img_key, caption_key) if k is not None]
        missing = [k for k in needed if k not in columns]
        if missing:
            raise ValueError(
                f"{path} has columns {columns}; missing {missing} (separator {separator!r})"
            )
        return [(row[img_key] if img_key else "", row[caption_key]) for row in reader]


def read_pairs(
    source: str | Path,
    *,
    img_key: str = "filepath",
    caption_key: str = "title",
    separator: str = "\t",
) -> list[tuple[Path, str]]:
    """(image path, caption) pairs from an open_clip-style CSV or a folder.

    A CSV (tab-separated by default) has a header with ``img_key`` and ``caption_key`` columns,
    as open_clip_train's ``--dataset-type csv``; relative image paths are taken from the CSV's
    folder. A folder holds images with a caption file of the same stem (``a.png`` + ``a.txt``).

    Raises:
        FileNotFoundError: If ``source`` does not exist.
        ValueError: If a column is missing or no pair is found.
    """
    source = Path(source)
    if source.is_dir():
        pairs = []
        for image in sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            text = image.with_suffix(".txt")
            if text.is_file():
                pairs.append((image, text.read_text().strip()))
    elif source.is_file():
        rows = _read_csv(source, img_key, caption_key, separator)
        pairs = [
            (p if p.is_absolute() else source.parent / p, caption)
            for p, caption in ((Path(f), c) for f, c in rows)
        ]
    else:
        raise FileNotFoundError(f"pairs source not found: {source}")
    if not pairs:
        raise ValueError(f"no (image, caption) pairs in {source}")
    return pairs


class CaptionDataset(torch.utils.data.Dataset[Tensor]):
    """Token ids ``(L,)`` of each caption."""

    def __init__(self, captions: Sequence[str], tokenizer: Callable[..., Tensor]) -> None:
        self.captions = list(captions)
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> Tensor:
        return self.tokenizer([self.captions[index]])[0]


class PairDataset(torch.utils.data.Dataset[tuple[Tensor, Tensor]]):
    """``(image (3, H, W), token ids (L,))`` per pair."""

    def __init__(
        self,
        pairs: Sequence[tuple[Path, str]],
        preprocess: Callable[[Image.Image], Tensor],
        tokenizer: Callable[..., Tensor],
    ) -> None:
        self.pairs = list(pairs)
        self.preprocess = preprocess
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        path, caption = self.pairs[index]
        with Image.open(path) as image:
            pixels = self.preprocess(image.convert("RGB"))
        return pixels, self.tokenizer([caption])[0]


# ------------------------------------------------------------------------------ distributed


@dataclass(frozen=True)
class DistInfo:
    """Rank and world size of this process (``world_size = 1`` without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group set up by ``torchrun`` (env ``WORLD_SIZE > 1``), else no-op.

    ``backend`` defaults to ``"nccl"`` when CUDA is available, else ``"gloo"``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )


def _barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


# ---------------------------------------------------------------------------------- training


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


def text_parameters(model: nn.Module, *, token_embedding: bool = False) -> list[str]:
    """Names of the text-tower parameters of an open_clip CLIP/CustomTextCLIP.

    ``token_embedding=False`` leaves the token table out (TULIP does not train it).
    """
    names = []
    for name, _ in model.named_parameters():
        if name.startswith("visual.") or name in ("logit_scale", "logit_bias"):
            continue
        if not token_embedding and name.split(".")[-2:-1] == ["token_embedding"]:
            continue
        names.append(name)
    return names


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


class _TextFeatures(nn.Module):
    """``encode_text`` as ``forward``, so DDP sees (and syncs) the text-tower gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        return cast(Tensor, cast(Any, self.model).encode_text(tokens))


def _upgraded_spec(model: nn.Module, role: str) -> TextContextSpec:
    spec = text_context_spec(model)
    if spec is None:
        raise ValueError(f"{role} must be upgraded with upgrade_text_context first")
    return spec


def _run_stage(
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
        _barrier(info)

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


def distill_text_tower(
    teacher: nn.Module,
    student: nn.Module,
    captions: Sequence[str],
    tokenizer: Callable[..., Tensor],
    config: StageConfig | None = None,
    *,
    train_token_embedding: bool = False,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    info: DistInfo | None = None,
) -> list[float]:
    r"""TULIP stage 1: distil the original text tower into the upgraded one on 77 tokens.

    From "TULIP: Token-length Upgraded CLIP" (Najdenkoska et al., ICLR 2025, arXiv:2410.10034),
    Sec. 3.2: :math:`\mathcal{L}_1 = 1 - \cos(f_T(t), f_S(t))` on the projected, pooled
    embeddings of the same first ``L0`` tokens ``t`` (``tokenizer`` should tokenize at the
    teacher's length, 77). Trained: every text-tower parameter of ``student`` except the token
    table (unless ``train_token_embedding``); the projection is trained and kept.

    Args:
        teacher: The original model (frozen, eval mode).
        student: The upgraded model (trained in place).
        captions: Caption strings.
        tokenizer: Tokenizer at the teacher's context length.
        config: Hyper-parameters.
        train_token_embedding: Also train the token table.
        checkpoint: Checkpoint file (written every ``config.checkpoint_every`` steps and at the
            end).
        resume: Continue from ``checkpoint`` if it exists.
        progress: Show a tqdm bar (rank 0).
        info: Distributed info (default: :func:`init_distributed`).

    Returns:
        The loss of every step (averaged over ranks).

    Raises:
        ValueError: If ``student`` is not upgraded or the checkpoint belongs to another run.
    """
    spec = _upgraded_spec(student, "student")
    info = info or init_distributed()
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    device = next(student.parameters()).device

    def loss_of_batch(module: nn.Module, tokens: Tensor) -> Tensor:
        tokens = trim_tokens(tokens.to(device))
        with torch.no_grad():
            target = cast(Any, teacher).encode_text(tokens)
        return (1.0 - F.cosine_similarity(module(tokens), target, dim=-1)).mean()

    return _run_stage(
        stage="distill",
        model=student,
        trainable=text_parameters(student, token_embedding=train_token_embedding),
        ddp_module=_TextFeatures(student),
        dataset=CaptionDataset(captions, tokenizer),
        loss_of_batch=loss_of_batch,
        config=config,
        info=info,
        checkpoint=checkpoint,
        resume=resume,
        progress=progress,
        extra_state={"spec": spec.to_dict()},
    )


def finetune_long_captions(
    model: nn.Module,
    pairs: Sequence[tuple[Path, str]] | torch.utils.data.Dataset[Any],
    preprocess: Callable[[Image.Image], Tensor] | None,
    tokenizer: Callable[..., Tensor] | None,
    config: StageConfig | None = None,
    *,
    lock_image: bool = False,
    train_token_embedding: bool = False,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    info: DistInfo | None = None,
) -> list[float]:
    r"""TULIP stage 2: CLIP contrastive fine-tuning on (image, long caption) pairs.

    From "TULIP: Token-length Upgraded CLIP" (Najdenkoska et al., ICLR 2025, arXiv:2410.10034),
    Sec. 3.3, with the symmetric InfoNCE loss of CLIP (Radford et al., 2021,
    arXiv:2103.00020, Eq. in Fig. 3):

    .. math::
        \mathcal{L}_2 = \tfrac12\big(\mathrm{CE}(s\, I T^\top, \mathrm{id})
        + \mathrm{CE}(s\, T I^\top, \mathrm{id})\big)

    with :math:`I, T` the normalised image and text features and :math:`s` the logit scale;
    under DDP the features of all ranks are gathered (open_clip's ``ClipLoss``). Captions are
    tokenized at ``N`` (``tokenizer``) and trimmed to the longest caption of each batch.

    Args:
        model: An upgraded model (trained in place).
        pairs: ``(image path, caption)`` pairs (see :func:`read_pairs`) or a dataset yielding
            ``(image tensor, token ids)``.
        preprocess: Image transform (ignored when ``pairs`` is a dataset).
        tokenizer: Tokenizer at ``N`` (ignored when ``pairs`` is a dataset).
        config: Hyper-parameters.
        lock_image: Freeze the image tower (LiT-style); TULIP trains both towers.
        train_token_embedding: Also train the token table.
        checkpoint, resume, progress, info: As :func:`distill_text_tower`.

    Returns:
        The loss of every step.

    Raises:
        ValueError: If ``model`` is not upgraded or the checkpoint belongs to another run.
    """
    spec = _upgraded_spec(model, "model")
    info = info or init_distributed()
    if isinstance(pairs, torch.utils.data.Dataset):
        dataset = pairs
    else:
        if preprocess is None or tokenizer is None:
            raise ValueError("preprocess and tokenizer are needed for (path, caption) pairs")
        dataset = PairDataset(pairs, preprocess, tokenizer)
    trainable = text_parameters(model, token_embedding=train_token_embedding)
    trainable.append("logit_scale")
    if not lock_image:
        trainable += [n for n, _ in model.named_parameters() if n.startswith("visual.")]
    loss_fn = open_clip.ClipLoss(rank=info.rank, world_size=info.world_size)
    device = next(model.parameters()).device

    def loss_of_batch(module: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        images, tokens = batch
        out = module(images.to(device), trim_tokens(tokens.to(device)))
        image_features, text_features, logit_scale = out[0], out[1], out[2]
        return cast(Tensor, loss_fn(image_features, text_features, logit_scale))

    return _run_stage(
        stage="finetune",
        model=model,
        trainable=trainable,
        ddp_module=model,
        dataset=dataset,
        loss_of_batch=loss_of_batch,
        config=config,
        info=info,
        checkpoint=checkpoint,
        resume=resume,
        progress=progress,
        extra_state={"spec": spec.to_dict(), "lock_image": lock_image},
    )
