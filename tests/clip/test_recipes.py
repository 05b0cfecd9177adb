"""multipos.clip recipes: objectives, the Long-CLIP and TULIP presets, input checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

open_clip = pytest.importorskip("open_clip", reason="the clip extra (open_clip_torch) is absent")

import torch  # noqa: E402

from multipos.clip import StageConfig, finetune_long_captions, upgrade_text_context  # noqa: E402
from multipos.clip.objectives import (  # noqa: E402
    LongShortClipLoss,
    distillation_loss,
    first_sentence_ids,
    pca_reconstruct,
    period_token_id,
)
from multipos.clip.recipes import (  # noqa: E402
    RECIPES,
    extend_rotary_context,
    freeze_position_rows,
    release_position_rows,
)
from multipos.clip.upgrade_cli import build_parser, main  # noqa: E402
from tests.clip.test_training import captions, data  # noqa: E402, F401
from tests.clip.test_upgrade import build, tiny_cfg  # noqa: E402

TOK77 = open_clip.get_tokenizer("ViT-B-32", context_length=77)


# -------------------------------------------------------------------------------- objectives


def test_first_sentence_ids_equal_tokenizing_the_first_sentence() -> None:
    texts = ["a red cube. on a table. far away", "no period here at all", "one. two"]
    ids = open_clip.get_tokenizer("ViT-B-32", context_length=248)(texts)
    short = first_sentence_ids(ids, period_id=period_token_id(), length=77)
    assert torch.equal(short, TOK77(["a red cube", "no period here at all", "one"]))
    long_first = ["word " * 120 + ". end"]
    cut = first_sentence_ids(
        open_clip.get_tokenizer("ViT-B-32", context_length=248)(long_first),
        period_id=period_token_id(),
        length=77,
    )
    assert torch.equal(cut, TOK77(long_first))  # truncated like the tokenizer, end token kept


def test_distillation_losses_and_pca() -> None:
    a, b = torch.tensor([[3.0, 4.0]]), torch.tensor([[6.0, 8.0]])
    assert float(distillation_loss(a, b, "cosine")) == pytest.approx(0.0, abs=1e-7)
    assert float(distillation_loss(a, b, "l2")) == pytest.approx(5.0)
    assert float(distillation_loss(a, b, "mse")) == pytest.approx(12.5)
    with pytest.raises(ValueError, match="cosine"):
        distillation_loss(a, b, "kl")  # type: ignore[arg-type]
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pca_reconstruct(x, 8), x, atol=1e-5, rtol=0)
    rank2 = pca_reconstruct(x, 2)
    assert torch.linalg.matrix_rank(rank2 - rank2.mean(0)) == 2


def test_long_short_loss_weights() -> None:
    g = torch.Generator().manual_seed(0)
    image, long, short = (
        torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=-1) for _ in range(3)
    )
    scale = torch.tensor(10.0)
    alone = LongShortClipLoss(1.0, 0.0)(image, long, scale)
    short_alone = LongShortClipLoss(0.0, 1.0)(image, long, scale, short)
    both = LongShortClipLoss(0.8, 0.2)(image, long, scale, short, output_dict=True)
    assert float(both["contrastive_loss"]) == pytest.approx(0.8 * float(alone), rel=1e-6)
    assert float(both["first_sentence_loss"]) == pytest.approx(0.2 * float(short_alone), rel=1e-6)
    assert float(open_clip.ClipLoss()(image, long, scale)) == pytest.approx(float(alone), rel=1e-6)
    with pytest.raises(ValueError, match="short_text_features"):
        LongShortClipLoss(1.0, 0.5)(image, long, scale)


# -------------------------------------------------------------------------------- presets


def _pairs_dataset(count: int = 8) -> torch.utils.data.Dataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(count, 3, 32, 32, generator=g)
    texts = [
        f"a {w} thing. " + c for w, c in zip(captions(count, 1), captions(count, 120), strict=True)
    ]
    tokens = open_clip.get_tokenizer("ViT-B-32", context_length=248)(texts)
    return torch.utils.data.TensorDataset(images, tokens)


def test_long_clip_preset_keeps_frozen_rows_through_training() -> None:
    recipe = RECIPES["long-clip"]
    model = upgrade_text_context(build(tiny_cfg()), recipe.method, 248)
    before = model.positional_embedding.detach().clone()
    finetune_long_captions(
        model,
        _pairs_dataset(),
        None,
        None,
        StageConfig(steps=3, batch_size=4, lr=1e-2, weight_decay=recipe.weight_decay),
        train_token_embedding=recipe.train_token_embedding,
        long_weight=recipe.long_weight,
        short_weight=recipe.short_weight,
        short_image=recipe.short_image,
        pca_dim=4,
        label_smoothing=recipe.label_smoothing,
        frozen_rows=recipe.frozen_rows,
        progress=False,
    )
    after = model.positional_embedding
    assert torch.equal(after[:20], before[:20])  # Long-CLIP's frozen rows
    assert (after[20:] - before[20:]).abs().max() > 1e-3  # the residual rows trained
    assert sorted(model.state_dict()) == sorted(
        upgrade_text_context(build(tiny_cfg()), "kps", 248).state_dict()
    )  # no parametrization left behind


def test_frozen_rows_refuse_rope_and_release_is_exact() -> None:
    with pytest.raises(ValueError, match="rope"):
        freeze_position_rows(upgrade_text_context(build(tiny_cfg()), "rope", 248), 20)
    model = upgrade_text_context(build(tiny_cfg()), "kps", 248)
    table = model.positional_embedding.detach().clone()
    freeze_position_rows(model, 20)
    with pytest.raises(ValueError, match="already"):
        freeze_position_rows(model, 20)
    release_position_rows(model)
    assert torch.equal(model.positional_embedding, table)


def test_tulip_preset_extends_the_rotary_context_with_dynamic_ntk() -> None:
    model = upgrade_text_context(build(tiny_cfg()), "rope", 248)
    tok = open_clip.get_tokenizer("ViT-B-32", context_length=248)(["a long caption " * 20])
    before = model.encode_text(tok)
    spec = extend_rotary_context(
        model, 248, {"kind": "dynamic", "factor": 8.0, "original_length": 248.0}
    )
    assert spec.scaling.kind == "dynamic" and model.text_context_spec == spec
    torch.testing.assert_close(model.encode_text(tok), before)  # factor 8 at N: same base
    extend_rotary_context(model, 496, {"kind": "dynamic", "factor": 8.0, "original_length": 248.0})
    assert not torch.allclose(model.encode_text(tok), before)  # a larger base at 2N
    longer = open_clip.get_tokenizer("ViT-B-32", context_length=496)(["x " * 400])
    assert model.encode_text(longer).shape == (1, 32)


def test_tulip_command_keeps_the_teacher_projection(data: Path, capsys) -> None:  # noqa: F811
    out = data / "tulip"
    args = [
        "--model", str(data / "tiny-clip-test.json"), "--recipe", "tulip",
        "--distill-data", str(data / "captions.txt"), "--finetune-data", str(data / "pairs.csv"),
        "--distill-steps", "2", "--finetune-steps", "2", "--batch-size", "4",
        "--distill-warmup", "0", "--finetune-warmup", "0", "--distill-lr", "1e-2",
        "--no-progress", "--out", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["spec"]["scaling"] == pytest.approx(
        {**summary["spec"]["scaling"], "kind": "dynamic", "factor": 8.0, "original_length": 248.0}
    )
    assert not (out / "checkpoints").exists()  # removed after success
    saved = torch.load(out / "open_clip_pytorch_model.bin")
    open_clip.add_model_config(data / "tiny-clip-test.json")
    torch.manual_seed(0)
    teacher = open_clip.create_model("tiny-clip-test")
    # Stage 2 started from the teacher's projection and trained it with lr 1e-5 for 2 steps;
    # the distilled one (lr 1e-2) was thrown away.
    assert (saved["text_projection"] - teacher.text_projection).abs().max() < 1e-4
    assert summary["recipe"] == "tulip"


# --------------------------------------------------------------------------- command inputs


def _base(folder: Path, out: str = "o") -> list[str]:
    return [
        "--model",
        str(folder / "tiny-clip-test.json"),
        "--out",
        str(folder / out),
        "--no-progress",
    ]


def _error(capsys) -> str:
    return capsys.readouterr().err


def test_distillation_through_the_command_on_short_captions(data: Path) -> None:  # noqa: F811
    (data / "short.txt").write_text("\n".join(captions(8, words=5)) + "\n")
    argv = [*_base(data), "--distill-data", str(data / "short.txt"), "--distill-steps", "2"]
    assert main([*argv, "--batch-size", "4"]) == 0


def test_bad_inputs_fail_before_training(data: Path, capsys) -> None:  # noqa: F811
    base = _base(data)
    assert main([*base, "--context-length", "77"]) == 2
    assert "does not extend" in _error(capsys)
    (data / "junk.bin").write_bytes(b"not a checkpoint at all")
    assert main([*base, "--pretrained", str(data / "junk.bin")]) == 2
    assert "not an open_clip/OpenAI checkpoint" in _error(capsys)
    assert main([*base, "--method", "rope", "--keep", "30"]) == 2
    assert "--keep (kps only)" in _error(capsys)
    assert main([*base, "--method", "kps", "--rope-base", "500"]) == 2
    assert "--rope-base (rope only)" in _error(capsys)
    # Bad fine-tuning data is found before distillation runs.
    rows = (data / "pairs.csv").read_text().splitlines()
    cases = {
        "missing": (rows[1].replace("img00.png", "nothing.png"), "row 1 not found"),
        "corrupt": (rows[1].replace("img00.png", "junk.bin"), "row 1 cannot be read"),
        "empty": (rows[1].split("\t")[0] + "\t ", "row 1 is empty"),
        "too long": (rows[1].split("\t")[0] + "\t" + "word " * 300, "longer than the context"),
    }
    for name, (row, message) in cases.items():
        (data / "bad.csv").write_text("\n".join([rows[0], row, *rows[2:]]) + "\n")
        argv = [*base, "--distill-data", str(data / "captions.txt"), "--distill-steps", "50",
                "--finetune-data", str(data / "bad.csv")]  # fmt: skip
        assert main(argv) == 2, name
        assert message in _error(capsys), name
        assert not (data / "o" / "checkpoints").exists(), name
    # Fewer pairs than the batch: refused instead of repeating items in a batch.
    argv = [*base, "--finetune-data", str(data / "pairs.csv"), "--batch-size", "16"]
    assert main(argv) == 2
    assert "would repeat items" in _error(capsys)


def test_output_folder_and_resume_settings(data: Path, capsys) -> None:  # noqa: F811
    (data / "afile").write_text("x")
    assert main([*_base(data, "afile")]) == 2
    assert "is a file" in _error(capsys)
    argv = [*_base(data), "--distill-data", str(data / "captions.txt"), "--distill-steps", "1",
            "--batch-size", "4"]  # fmt: skip
    assert main(argv) == 0
    assert main(argv) == 2
    assert "--overwrite" in _error(capsys)
    assert main([*argv, "--overwrite"]) == 0
    assert main([*argv[:-1], "8", "--resume"]) == 2
    assert "batch_size: 4 -> 8" in _error(capsys)


def test_help_shows_text_and_default_for_every_option() -> None:
    parser = build_parser()
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help, action.dest
        if action.default is None and action.required is False and action.option_strings:
            # Unset options say what fills them: a recipe or the bracketed default.
            assert "[" in action.help or action.dest in {
                "pretrained", "recipe", "distill_data", "finetune_data", "eval_data",
                "distill_steps", "finetune_steps",
            }, action.dest  # fmt: skip
    text = parser.format_help()
    assert "(default: 248)" in text and "(default: fp32)" in text


# -------------------------------------------------------------------------------- launcher


def test_rope_tower_trains_with_gradient_checkpointing() -> None:
    model = upgrade_text_context(build(tiny_cfg()), "rope", 248)
    tokens = open_clip.get_tokenizer("ViT-B-32", context_length=248)(captions(2, words=100))
    expected = model.encode_text(tokens)
    model.set_grad_checkpointing(True)
    model.train()
    features = model.encode_text(tokens)
    features.sum().backward()
    torch.testing.assert_close(features, expected)
    assert model.transformer.resblocks[0].attn.in_proj_weight.grad is not None


def _launch(folder: Path, *extra: str) -> None:
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[2])
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": root}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "multipos.clip.train",
            "--train-data",
            str(folder / "pairs4.csv"),
            "--dataset-type",
            "csv",
            "--batch-size",
            "4",
            "--epochs",
            "1",
            "--workers",
            "1",
            "--lr",
            "1e-3",
            "--warmup",
            "0",
            "--logs",
            str(folder / "logs"),
            "--save-frequency",
            "0",
            *extra,
        ],
        env=env,
        cwd=folder,  # open_clip_train reads CSV image paths relative to the working folder
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_launcher_trains_one_step_through_open_clip_train(data: Path) -> None:  # noqa: F811
    """One open_clip_train step on a synthetic CSV: a rope tower with gradient checkpointing
    and the first-sentence loss, then a kps tower with Long-CLIP's frozen rows, exported."""
    pytest.importorskip("open_clip_train.main", reason="the train extra is absent")
    from multipos.clip import load_upgraded, save_upgraded

    rows = (data / "pairs.csv").read_text().splitlines()[:5]
    (data / "pairs4.csv").write_text("\n".join(rows) + "\n")
    for method in ("rope", "kps"):
        model = upgrade_text_context(build(tiny_cfg()), method, 248)
        save_upgraded(model, data / method, tiny_cfg())
    _launch(data, "--model", f"local-dir:{data / 'rope'}", "--grad-checkpointing",
            "--short-weight", "0.2", "--long-weight", "0.8", "--name", "rope")  # fmt: skip
    log = next((data / "logs").glob("rope/out.log")).read_text()
    assert "First_sentence_loss" in log and "Contrastive_loss" in log
    kps_args = ["--model", f"local-dir:{data / 'kps'}", "--frozen-rows", "20",
                "--short-weight", "1", "--short-image", "pca", "--pca-dim", "2",
                "--label-smoothing", "0.1", "--export", str(data / "kps-trained")]  # fmt: skip
    _launch(data, *kps_args, "--name", "kps")
    before, after = load_upgraded(data / "kps"), load_upgraded(data / "kps-trained")
    assert torch.equal(after.positional_embedding[:20], before.positional_embedding[:20])
    assert not torch.equal(after.positional_embedding[20:], before.positional_embedding[20:])
