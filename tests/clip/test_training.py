"""multipos.clip: distillation, long-caption fine-tuning, evaluation, the command, DDP."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

open_clip = pytest.importorskip("open_clip", reason="the clip extra (open_clip_torch) is absent")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from multipos.clip import (  # noqa: E402
    StageConfig,
    distill_text_tower,
    finetune_long_captions,
    load_upgraded,
    read_captions,
    read_pairs,
    retrieval_recall,
    short_caption_preservation,
    upgrade_text_context,
)
from multipos.clip.upgrade_cli import main  # noqa: E402
from tests.clip.test_upgrade import build, tiny_cfg  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WORDS = [
    "red",
    "green",
    "blue",
    "small",
    "large",
    "round",
    "square",
    "bright",
    "dark",
    "soft",
    "sharp",
    "old",
    "new",
    "tall",
]


def captions(count: int, words: int = 100, seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    return [
        " ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (words,), generator=g))
        for _ in range(count)
    ]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A tiny config JSON, captions.txt, a pairs CSV (with images) and a pairs folder."""
    (tmp_path / "tiny-clip-test.json").write_text(json.dumps(tiny_cfg()))
    texts = captions(12)
    (tmp_path / "captions.txt").write_text("\n".join(texts) + "\n")
    rows = ["filepath\ttitle"]
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, text in enumerate(texts):
        colour = (20 * i, 255 - 20 * i, (90 * i) % 256)
        Image.new("RGB", (32, 32), colour).save(tmp_path / f"img{i:02d}.png")
        Image.new("RGB", (32, 32), colour).save(folder / f"img{i:02d}.png")
        (folder / f"img{i:02d}.txt").write_text(text)
        rows.append(f"img{i:02d}.png\t{text}")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


# -------------------------------------------------------------------------------------- data


def test_read_pairs_csv_and_folder(data: Path) -> None:
    from_csv = read_pairs(data / "pairs.csv")
    from_folder = read_pairs(data / "folder")
    assert len(from_csv) == len(from_folder) == 12
    assert [c for _, c in from_csv] == [c for _, c in from_folder]
    assert all(p.is_file() for p, _ in from_csv)
    assert read_captions(data / "captions.txt") == [c for _, c in from_csv]
    assert read_captions(data / "pairs.csv") == [c for _, c in from_csv]
    with pytest.raises(ValueError, match="missing"):
        read_pairs(data / "pairs.csv", caption_key="caption")
    with pytest.raises(FileNotFoundError):
        read_pairs(data / "nope.csv")


# ---------------------------------------------------------------------------------- training


def test_distillation_learns_and_keeps_the_projection() -> None:
    teacher = build(tiny_cfg())
    student = upgrade_text_context(copy.deepcopy(teacher), "rope", 248)
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=77)
    losses = distill_text_tower(
        teacher,
        student,
        captions(16),
        tokenizer,
        StageConfig(steps=25, batch_size=8, lr=3e-3, checkpoint_every=0),
        progress=False,
    )
    assert len(losses) == 25
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert not torch.equal(student.text_projection, teacher.text_projection)
    assert torch.equal(student.token_embedding.weight, teacher.token_embedding.weight)
    for (name, a), b in zip(
        student.visual.state_dict().items(), teacher.visual.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert all(p.requires_grad for p in student.parameters())


@pytest.mark.parametrize("teacher_method", [None, "kps"])
@pytest.mark.parametrize("lengths", ["short", "mixed", "long"])
def test_distillation_on_short_captions(teacher_method: str | None, lengths: str) -> None:
    """Captions shorter than 77 tokens: the student reads trimmed ids, an original teacher the
    full 77 (its encode_text needs them); the first loss is the cosine distance before any
    update."""
    teacher = build(tiny_cfg())
    if teacher_method is not None:
        teacher = upgrade_text_context(teacher, teacher_method, 248)
    student = upgrade_text_context(copy.deepcopy(build(tiny_cfg())), "rope", 248)
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=77)
    words = {"short": [6] * 4, "mixed": [6, 30, 100, 3], "long": [100] * 4}[lengths]
    texts = [captions(1, words=w, seed=i)[0] for i, w in enumerate(words)]
    ids = tokenizer(texts)
    width = int((ids != 0).any(dim=0).nonzero().max()) + 1
    assert width == {"short": 8, "mixed": 77, "long": 77}[lengths]
    with torch.no_grad():
        expected = 1.0 - torch.nn.functional.cosine_similarity(
            student.encode_text(ids[:, :width]), teacher.encode_text(ids), dim=-1
        )
    losses = distill_text_tower(
        teacher,
        student,
        texts,
        tokenizer,
        StageConfig(steps=2, batch_size=4, lr=1e-3, checkpoint_every=0),
        progress=False,
    )
    assert len(losses) == 2
    assert losses[0] == pytest.approx(float(expected.mean()), rel=1e-5, abs=1e-6)
    assert losses[1] != losses[0]


class _FailAfter:
    """A tokenizer that raises after ``limit`` calls (a crash in the middle of training)."""

    def __init__(self, limit: int) -> None:
        self.inner = open_clip.get_tokenizer("ViT-B-32", context_length=77)
        self.limit, self.calls = limit, 0

    def __call__(self, texts: list[str]) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.limit:
            raise KeyboardInterrupt
        return self.inner(texts)


def test_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    teacher = build(tiny_cfg())
    config = StageConfig(steps=6, batch_size=4, lr=1e-3, checkpoint_every=2, seed=3)
    texts = captions(10)
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=77)
    straight = upgrade_text_context(copy.deepcopy(teacher), "kps", 248)
    expected = distill_text_tower(teacher, straight, texts, tokenizer, config, progress=False)

    ckpt = tmp_path / "distill.pt"
    crashed = upgrade_text_context(copy.deepcopy(teacher), "kps", 248)
    with pytest.raises(KeyboardInterrupt):
        # 4 items per step: the 5th step crashes, after the checkpoint of step 4.
        distill_text_tower(
            teacher, crashed, texts, _FailAfter(18), config, checkpoint=ckpt, progress=False
        )
    assert torch.load(ckpt, weights_only=False)["step"] == 4
    resumed = upgrade_text_context(copy.deepcopy(teacher), "kps", 248)
    losses = distill_text_tower(
        teacher, resumed, texts, tokenizer, config, checkpoint=ckpt, resume=True, progress=False
    )
    assert losses == expected
    for (name, a), b in zip(
        resumed.state_dict().items(), straight.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    other = upgrade_text_context(copy.deepcopy(teacher), "rope", 248)
    with pytest.raises(ValueError, match="another run"):
        distill_text_tower(
            teacher, other, texts, tokenizer, config, checkpoint=ckpt, resume=True, progress=False
        )


def test_finetune_with_locked_image_tower() -> None:
    model = upgrade_text_context(build(tiny_cfg()), "linear", 248)
    visual = copy.deepcopy(model.visual.state_dict())
    text_proj = model.text_projection.detach().clone()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(8, 3, 32, 32, generator=g)
    tokens = open_clip.get_tokenizer("ViT-B-32", context_length=248)(captions(8, words=150))
    dataset = torch.utils.data.TensorDataset(images, tokens)
    losses = finetune_long_captions(
        model,
        dataset,
        None,
        None,
        StageConfig(steps=4, batch_size=4, lr=1e-3, checkpoint_every=0),
        lock_image=True,
        progress=False,
    )
    assert all(torch.isfinite(torch.tensor(losses)))
    for name, value in model.visual.state_dict().items():
        assert torch.equal(value, visual[name]), name
    assert not torch.equal(model.text_projection, text_proj)


# -------------------------------------------------------------------------------- evaluation


def test_retrieval_recall_counts_ranks() -> None:
    eye = torch.eye(4)
    perfect = retrieval_recall(eye, eye, ks=(1, 2))
    assert perfect == {"t2i_r1": 100.0, "t2i_r2": 100.0, "i2t_r1": 100.0, "i2t_r2": 100.0}
    # Text 0 matches image 1 best, its own image second; the rest are right.
    text = eye.clone()
    text[0] = torch.tensor([0.6, 0.8, 0.0, 0.0])
    out = retrieval_recall(eye, text, ks=(1, 2))
    assert out["t2i_r1"] == 75.0 and out["t2i_r2"] == 100.0
    # Image 1 scores text 0 at 0.8, below its own text (1.0): still rank 1.
    assert out["i2t_r1"] == 100.0
    # A tie counts against the pair: text 0 equally close to images 0 and 1.
    text[0] = torch.tensor([1.0, 1.0, 0.0, 0.0]) / 2**0.5
    tied = retrieval_recall(eye, text, ks=(1, 2))
    assert tied["t2i_r1"] == 75.0 and tied["t2i_r2"] == 100.0
    with pytest.raises(ValueError, match="paired"):
        retrieval_recall(eye, eye[:3])


def test_short_caption_preservation() -> None:
    original = build(tiny_cfg())
    tokens = open_clip.get_tokenizer("ViT-B-32", context_length=77)(captions(6, words=12))
    kps = upgrade_text_context(copy.deepcopy(original), "kps", 248, keep=20)
    rope = upgrade_text_context(copy.deepcopy(original), "rope", 248)
    same = short_caption_preservation(original, kps, tokens)
    assert same["count"] == 6 and same["min_cosine"] > 1 - 1e-6
    moved = short_caption_preservation(original, rope, tokens)
    assert moved["mean_cosine"] < 0.999


# ----------------------------------------------------------------------------------- command


def _cli_args(data: Path, out: Path, method: str = "rope") -> list[str]:
    return [
        "--model",
        str(data / "tiny-clip-test.json"),
        "--method",
        method,
        "--distill-data",
        str(data / "captions.txt"),
        "--finetune-data",
        str(data / "pairs.csv"),
        "--eval-data",
        str(data / "folder"),
        "--batch-size",
        "4",
        "--distill-steps",
        "3",
        "--finetune-steps",
        "2",
        "--checkpoint-every",
        "1",
        "--no-progress",
        "--lock-image",
        "--keep-checkpoints",
        "--rope-scaling",
        "ntk",
        "--rope-scaling-factor",
        "2",
        "--out",
        str(out),
    ]


def test_command_runs_end_to_end_and_resumes(data: Path, capsys: pytest.CaptureFixture) -> None:
    out = data / "out"
    assert main(_cli_args(data, out)) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["spec"]["scaling"]["kind"] == "ntk"
    assert set(summary["eval_upgraded"]) == {"t2i_r1", "t2i_r5", "i2t_r1", "i2t_r5"}
    assert 0 < summary["short_caption_preservation"]["mean_cosine"] <= 1
    assert (out / "checkpoints" / "distill.pt").is_file()
    # The directory loads back through open_clip's own factory.
    model = open_clip.create_model(f"local-dir:{out}")
    assert model.text_context_spec.scaling.factor == 2.0
    for name, value in load_upgraded(out).state_dict().items():
        assert torch.equal(value, model.state_dict()[name]), name
    first = copy.deepcopy(model.state_dict())
    # Resuming a finished run trains nothing more and writes the same weights.
    assert main([*_cli_args(data, out), "--resume"]) == 0
    for name, value in load_upgraded(out).state_dict().items():
        assert torch.equal(value, first[name]), name


def test_command_reports_bad_input(data: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--model", "No-Such-Model", "--out", str(data / "x")]) == 2
    assert "unknown open_clip model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model", "ViT-B-32", "--method", "alibi", "--out", str(data / "x")])


@pytest.mark.slow
def test_command_under_torchrun_matches_one_process(data: Path) -> None:
    """2 processes x batch 2 with DDP (gloo) = 1 process x batch 4, for distillation."""
    common = [
        "--model",
        str(data / "tiny-clip-test.json"),
        "--method",
        "rope",
        "--distill-data",
        str(data / "captions.txt"),
        "--distill-steps",
        "3",
        "--distill-lr",
        "1e-3",
        "--no-progress",
        "--checkpoint-every",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launchers = {
        "ddp": ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
        "single": [],
    }
    for out, batch_size in (("ddp", "2"), ("single", "4")):
        done = subprocess.run(
            [
                sys.executable,
                *launchers[out],
                "-m",
                "multipos.clip.upgrade_cli",
                *common,
                "--batch-size",
                batch_size,
                "--out",
                str(data / out),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = load_upgraded(data / "ddp").state_dict(), load_upgraded(data / "single").state_dict()
    for name, value in a.items():
        # Adam normalises tiny gradients, so summation-order noise shows up to ~5e-5.
        torch.testing.assert_close(value, b[name], rtol=0, atol=2e-4, msg=name)
    # Training moved the weights by far more than that tolerance.
    open_clip.add_model_config(data / "tiny-clip-test.json")
    torch.manual_seed(0)
    fresh = open_clip.create_model("tiny-clip-test")
    assert (a["text_projection"] - fresh.text_projection).abs().max() > 2e-3
