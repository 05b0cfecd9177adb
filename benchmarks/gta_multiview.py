"""Two-view point correspondence: does GTA relate posed views better than absolute pose codes?

Tests the multi-view claim of GTA (Miyato, Jaeger, Welling, Geiger, ICLR 2024,
arXiv:2310.10375): encoding each token's camera as a group element, so that attention sees only
relative camera transforms, beats absolute pose encodings (an embedding of the pose or of the
rays added to the tokens) in multi-view transformers, and is unchanged by a change of world
frame.

Task: a scene of 3 identical small blobs (Gaussian, 0.8 px) at random positions in the cube
``[-1, 1]^3``, at least 0.5 apart, seen by two cameras at random poses (distance 4 to 5 from
the origin, random azimuth, elevation 10 to 60 degrees, aimed at a point near the origin,
upright, 50 degree field of view), rendered as 16x16 images cut into 4x4-pixel patches (16 per
view). Channel 0 holds the blobs (all alike), channel 1 marks one point in view 1 only. The
target is the patch of view 2 that shows the marked point. As the points look alike, the way to
find it is to relate the views through their poses (the marked point lies on the epipolar line
of its view-1 pixel); without camera geometry a model can only pick one of the visible points
(plus whatever cheap cues the camera distribution leaves, e.g. points near the origin appear
near both image centres). ``--roll`` turns every camera at random about its optical axis, a
harder variant (see below); ``--depth`` adds each blob's depth as a third channel (RGB-D).
Scenes are re-drawn until every point lies inside both images; a fresh batch is drawn every
step (seeded), the test set is fixed.

Model: :class:`multipos.vision.MultiViewEncoder` (dim 64, depth 4, 2 heads of width 32, MLP
ratio 2, learned within-view patch position for all) and a linear read-out of one logit per
view-2 token, softmax over the 16 view-2 patches. Cases (same model and training budget):
``gta`` (library default layout: per head 16 SE(3) channels, 16 SO(2) channels at 4
frequencies; translation scale 0.25 so translations are of order 1), ``absolute`` (linear
embedding of each patch's world-frame ray origin and direction, needs the intrinsics) and
``none`` (no camera geometry); ``--cases absolute_extrinsic`` embeds the flattened extrinsic of
each view instead of rays.

Recipe: AdamW (lr 1e-3, weight decay 0.05, betas 0.9/0.99), batch 64, linear warm-up over 5% of
the steps then cosine decay, 800 steps, 3 seeds (seed = initialisation and training scenes).
Test: 1000 fixed scenes, top-1 accuracy; then the same scenes with every camera of a scene
composed with one random rigid transform (a change of world frame: the images do not change),
where GTA must score the same and an absolute pose code need not.

Difficulty was tuned on learning curves of ``gta`` alone (one seed): with 24x24 views the
runs did not fit the CPU budget; with random camera roll no case left the ~47% plateau of
``none`` within 800 steps (measured: gta 46.8, absolute 47.6, none 47.0 test top-1).

Output: one JSON line per case and metric (``top1``, ``top1_world_shift``) with ``ours`` the
mean over seeds, ``baseline`` the same metric of ``absolute``, ``ratio`` = ours / baseline,
``std``, ``per_seed``, ``train_acc`` (last 10% of steps), mean training wall and CPU seconds;
then a table. ``--jobs N`` trains N runs at once in separate processes (``--threads`` each;
with one thread a run is deterministic, so ``--jobs`` does not change the figures).
Measured: 342 s for the 9 runs on one thread (the second core busy with another job); a GTA
run takes twice the time of the others (~55 s against ~28 s).

    python benchmarks/gta_multiview.py [--seeds 3] [--steps 800] [--quick] [--threads 1]
        [--jobs 1] [--roll] [--depth]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from _common import emit
from torch import Tensor, nn

from multipos.vision import GTALayout, MultiViewEncoder

BENCH = "gta_multiview"
PATCH = 4
FOV_DEG = 50.0
SIGMA = 0.8


@dataclass(frozen=True)
class Task:
    image: int = 16
    points: int = 3
    depth: bool = False  # a third channel: each blob's depth in its camera (RGB-D views)
    roll: bool = False  # cameras turned at random about their optical axis (harder)
    dim: int = 64
    layers: int = 4


TASK = Task()
TEST_SEED = 12345
TEST_SCENES = 1000
STEPS = 800
BATCH = 64
CASES = ("gta", "absolute", "none")
EXTRA_CASES = ("absolute_extrinsic",)  # flattened extrinsic per view instead of rays


@dataclass
class Batch:
    images: Tensor  # (B, V=2, C, S, S)
    extrinsics: Tensor  # (B, 2, 4, 4)
    intrinsics: Tensor  # (B, 2, 3, 3)
    target: Tensor  # (B,) patch index in view 2


def intrinsics_matrix(image: int) -> Tensor:
    f = (image / 2) / math.tan(math.radians(FOV_DEG) / 2)
    return torch.tensor([[f, 0.0, image / 2], [0.0, f, image / 2], [0.0, 0.0, 1.0]])


def look_at(eye: Tensor, target: Tensor, roll: Tensor) -> Tensor:
    """World-to-camera ``(n, 4, 4)`` (OpenCV axes) for cameras at ``eye`` aimed at ``target``,
    turned by ``roll`` (radians) about the optical axis."""
    z = F.normalize(target - eye, dim=-1)
    up = torch.tensor([0.0, 0.0, 1.0]).expand_as(z)
    x0 = F.normalize(torch.cross(z, -up, dim=-1), dim=-1)  # image x right, y down
    y0 = torch.cross(z, x0, dim=-1)
    c, s = roll.cos()[:, None], roll.sin()[:, None]
    x, y = c * x0 + s * y0, c * y0 - s * x0
    rot = torch.stack([x, y, z], dim=-2)  # rows: camera axes in world coordinates
    e = torch.eye(4).repeat(len(eye), 1, 1)
    e[:, :3, :3] = rot
    e[:, :3, 3] = -(rot @ eye.unsqueeze(-1)).squeeze(-1)
    return e


def project(points: Tensor, e: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """Pixels ``(n, N, 2)`` and depths ``(n, N)`` of ``points (n, N, 3)`` in cameras ``e``."""
    cam = points @ e[:, :3, :3].transpose(-1, -2) + e[:, None, :3, 3]
    pix = cam @ k.T
    return pix[..., :2] / pix[..., 2:], cam[..., 2]


def random_rigid(n: int, g: torch.Generator, shift: float) -> Tensor:
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    q = q * torch.sign(torch.linalg.det(q))[:, None, None]
    e = torch.eye(4).repeat(n, 1, 1)
    e[:, :3, :3] = q
    e[:, :3, 3] = shift * torch.randn(n, 3, generator=g)
    return e


def blobs(pixels: Tensor, image: int) -> Tensor:
    """Gaussian blobs ``(n, N, S, S)``, one per point of ``pixels (n, N, 2)``."""
    centres = torch.arange(image) + 0.5
    du = centres.view(1, 1, 1, -1) - pixels[..., 0, None, None]
    dv = centres.view(1, 1, -1, 1) - pixels[..., 1, None, None]
    return torch.exp(-(du**2 + dv**2) / (2 * SIGMA**2))


def make_batch(n: int, g: torch.Generator, task: Task) -> Batch:
    """``n`` scenes (see the module docstring), re-drawn until valid."""
    k = intrinsics_matrix(task.image)
    kept: list[tuple[Tensor, Tensor, Tensor]] = []
    have = 0
    while have < n:
        m = 2 * n
        pts = torch.rand(m, task.points, 3, generator=g) * 2 - 1
        cams = []
        for _ in range(2):
            azim = torch.rand(m, generator=g) * 2 * math.pi
            elev = torch.deg2rad(10 + 50 * torch.rand(m, generator=g))
            dist = 4 + torch.rand(m, generator=g)
            eye = dist[:, None] * torch.stack(
                [elev.cos() * azim.cos(), elev.cos() * azim.sin(), elev.sin()], dim=-1
            )
            roll = torch.rand(m, generator=g) * 2 * math.pi if task.roll else torch.zeros(m)
            cams.append(look_at(eye, 0.3 * torch.randn(m, 3, generator=g), roll))
        e = torch.stack(cams, dim=1)  # (m, 2, 4, 4)
        projected = [project(pts, e[:, v], k) for v in range(2)]
        pix = torch.stack([p for p, _ in projected], dim=1)  # (m, 2, N, 2)
        depth = torch.stack([d for _, d in projected], dim=1)  # (m, 2, N)
        inside = ((pix > 1) & (pix < task.image - 1)).all(-1).all(-1).all(-1)
        dists = torch.cdist(pts, pts) + 10 * torch.eye(task.points)
        ok = inside & (depth > 0.5).all(-1).all(-1) & (dists.amin(dim=(-1, -2)) >= 0.5)
        kept.append((pix[ok], depth[ok], e[ok]))
        have += int(ok.sum())
    pix, depth, e = (torch.cat(parts)[:n] for parts in zip(*kept, strict=True))
    marked = torch.randint(task.points, (n,), generator=g)
    rows = torch.arange(n)
    each = blobs(pix.flatten(0, 1), task.image).unflatten(0, (n, 2))  # (n, 2, N, S, S)
    channels = [each.amax(dim=2), torch.zeros_like(each[:, :, 0])]
    channels[1][:, 0] = each[rows, 0, marked]  # the marker, view 1 only
    if task.depth:
        # Depth (centred on the camera distance) where each blob is, blobs rarely overlap.
        channels.append((each * (depth - 4.5)[..., None, None]).sum(dim=2))
    images = torch.stack(channels, dim=2)  # (n, V=2, C, S, S)
    uv = pix[rows, 1, marked]  # (n, 2) pixel of the marked point in view 2
    cols = task.image // PATCH
    target = (uv[:, 1] // PATCH).long() * cols + (uv[:, 0] // PATCH).long()
    return Batch(images, e, k.expand(n, 2, 3, 3).clone(), target)


def world_shift(batch: Batch, g: torch.Generator) -> Batch:
    """The same scenes in another world frame: every extrinsic of a scene times G^-1."""
    inv_g = torch.linalg.inv(random_rigid(len(batch.target), g, shift=2.0))
    return Batch(batch.images, batch.extrinsics @ inv_g[:, None], batch.intrinsics, batch.target)


class Correspondence(nn.Module):
    """Encoder plus one logit per view-2 patch."""

    def __init__(self, case: str, task: Task) -> None:
        super().__init__()
        geometry = case.split("_")[0]
        kwargs: dict[str, object] = {}
        if geometry == "gta":
            kwargs["gta"] = GTALayout(translation_scale=0.25)
        if geometry == "absolute":
            kwargs["pose_embedding"] = "extrinsic" if case == "absolute_extrinsic" else "rays"
        self.rays = kwargs.get("pose_embedding") == "rays"
        self.geometry = geometry
        self.encoder = MultiViewEncoder(
            image_size=task.image,
            patch_size=PATCH,
            in_chans=3 if task.depth else 2,
            dim=task.dim,
            depth=task.layers,
            num_heads=2,
            mlp_ratio=2.0,
            geometry=geometry,  # type: ignore[arg-type]
            **kwargs,  # type: ignore[arg-type]
        )
        self.head = nn.Linear(task.dim, 1)
        self.train_acc = float("nan")  # mean training accuracy over the last 10% of steps
        self.cpu_seconds = float("nan")  # CPU time of the training (all threads)

    def forward(self, batch: Batch) -> Tensor:
        intrinsics = batch.intrinsics if self.rays else None
        tokens = self.encoder(batch.images, batch.extrinsics, intrinsics)
        view2 = tokens[:, self.encoder.num_patches :]  # (B, P, dim)
        return self.head(view2).squeeze(-1)  # (B, P)


def accuracy(model: Correspondence, batch: Batch, chunk: int = 250) -> float:
    model.eval()
    hits = 0
    with torch.no_grad():
        for s in range(0, len(batch.target), chunk):
            part = Batch(*(getattr(batch, f)[s : s + chunk] for f in Batch.__dataclass_fields__))
            hits += int((model(part).argmax(-1) == part.target).sum())
    model.train()
    return hits / len(batch.target)


def train(
    geometry: str, seed: int, steps: int, task: Task, log_every: int
) -> tuple[Correspondence, float]:
    torch.manual_seed(seed)
    model = Correspondence(geometry, task)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, betas=(0.9, 0.99))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            (s + 1) / warm
            if s < warm
            else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))
        ),
    )
    g = torch.Generator().manual_seed(1000 + seed)
    hits: list[float] = []
    start, cpu = time.perf_counter(), time.process_time()
    for step in range(steps):
        batch = make_batch(BATCH, g, task)
        logits = model(batch)
        loss = F.cross_entropy(logits, batch.target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        hits.append(float((logits.argmax(-1) == batch.target).float().mean()))
        if log_every and (step + 1) % log_every == 0:
            recent = statistics.fmean(hits[-log_every:])
            print(
                f"#   {geometry} seed {seed} step {step + 1}: loss {loss.item():.3f} "
                f"train acc {100 * recent:.1f} ({time.perf_counter() - start:.0f}s)",
                file=sys.stderr,
                flush=True,
            )
    model.train_acc = statistics.fmean(hits[-max(1, steps // 10) :])
    model.cpu_seconds = time.process_time() - cpu
    return model, time.perf_counter() - start


@dataclass(frozen=True)
class Job:
    case: str
    seed: int
    steps: int
    task: Task
    test_size: int
    threads: int
    log_every: int


def run_job(job: Job) -> dict[str, float]:
    """Train one (case, seed) and score it on the fixed test scenes and their shifted copies."""
    torch.set_num_threads(job.threads)
    g = torch.Generator().manual_seed(TEST_SEED)
    test = make_batch(job.test_size, g, job.task)
    shifted = world_shift(test, g)
    model, secs = train(job.case, job.seed, job.steps, job.task, job.log_every)
    return {
        "top1": accuracy(model, test),
        "top1_world_shift": accuracy(model, shifted),
        "train": model.train_acc,
        "seconds": secs,
        "cpu_seconds": model.cpu_seconds,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per case (default 3)")
    parser.add_argument("--steps", type=int, default=None, help=f"training steps ({STEPS})")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 20 steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job (1)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings run at once (1)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES + EXTRA_CASES)
    parser.add_argument("--image", type=int, default=TASK.image, help="image side (pixels)")
    parser.add_argument("--points", type=int, default=TASK.points, help="points per scene")
    parser.add_argument("--depth", action="store_true", help="add a depth channel (RGB-D)")
    parser.add_argument("--roll", action="store_true", help="random camera roll (harder)")
    parser.add_argument("--dim", type=int, default=TASK.dim, help="token width")
    parser.add_argument("--layers", type=int, default=TASK.layers, help="transformer blocks")
    parser.add_argument("--log-every", type=int, default=0, help="print progress every N steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = 1 if args.quick else args.seeds
    steps = args.steps if args.steps is not None else (20 if args.quick else STEPS)
    task = Task(args.image, args.points, args.depth, args.roll, args.dim, args.layers)
    test_size = 100 if args.quick else TEST_SCENES
    print(
        f"# {task}, {test_size} test scenes, {steps} steps x batch {BATCH}, seeds "
        f"{list(range(seeds))}, {args.jobs} job(s) x {args.threads} thread(s)",
        file=sys.stderr,
        flush=True,
    )
    jobs = [
        Job(case, seed, steps, task, test_size, args.threads, args.log_every)
        for seed in range(seeds)
        for case in args.cases
    ]
    results: dict[str, dict[str, list[float]]] = {
        case: {key: [] for key in ("top1", "top1_world_shift", "train", "seconds", "cpu_seconds")}
        for case in args.cases
    }
    start = time.perf_counter()

    def record(job: Job, out: dict[str, float]) -> None:
        r = results[job.case]
        for key in r:
            r[key].append(out[key])
        print(
            f"# {job.case:<9} seed {job.seed}: train {100 * out['train']:.1f}  test "
            f"{100 * out['top1']:.1f}  world-shifted {100 * out['top1_world_shift']:.1f}"
            f"  ({out['seconds']:.0f}s train, {out['cpu_seconds']:.0f}s CPU, "
            f"{time.perf_counter() - start:.0f}s total)",
            file=sys.stderr,
            flush=True,
        )

    if args.jobs > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            for job, out in zip(jobs, pool.map(run_job, jobs), strict=True):
                record(job, out)
    else:
        for job in jobs:
            record(job, run_job(job))

    def stats(xs: list[float]) -> tuple[float, float]:
        return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0

    base_case = "absolute" if "absolute" in results else args.cases[0]
    for case, r in results.items():
        for metric in ("top1", "top1_world_shift"):
            mean, std = stats(r[metric])
            emit(
                BENCH,
                case,
                metric,
                mean,
                stats(results[base_case][metric])[0],
                std=std,
                train_acc=stats(r["train"])[0],
                train_seconds=stats(r["seconds"])[0],
                train_cpu_seconds=stats(r["cpu_seconds"])[0],
                seeds=seeds,
                steps=steps,
                per_seed=r[metric],
            )
    print(f"\n{'geometry':<10} {'train':>6} {'test top-1 %':>14} {'world-shifted %':>16}")
    print("-" * 49)
    for case, r in results.items():
        cells = [stats(r[m]) for m in ("top1", "top1_world_shift")]
        print(
            f"{case:<10} {100 * stats(r['train'])[0]:>6.1f} "
            + " ".join(f"{100 * m:>9.1f} ± {100 * s:<4.1f}" for m, s in cells)
        )
    print(f"\nwall time {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
