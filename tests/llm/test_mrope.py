import pytest
import torch

from multipos.llm import mrope_positions

transformers = pytest.importorskip("transformers", reason="the reference needs extra 'hf'")

IMG, VID, START, END = 100, 101, 102, 103


@pytest.fixture(scope="module")
def reference():
    """transformers' own Qwen2VLModel.get_rope_index on a tiny random model."""
    config = transformers.Qwen2VLConfig(
        text_config={
            "vocab_size": 128,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1e4,
                "mrope_section": [2, 3, 3],
            },
        },
        vision_config={
            "depth": 1,
            "embed_dim": 16,
            "hidden_size": 32,
            "num_heads": 2,
            "patch_size": 2,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=IMG,
        video_token_id=VID,
        vision_start_token_id=START,
        vision_end_token_id=END,
    )
    model = transformers.Qwen2VLModel(config).eval()
    return model.get_rope_index


def _types(ids):
    return (ids == IMG).long() + 2 * (ids == VID).long()


def _image(n):
    return [START, *[IMG] * n, END]


def _video(n):
    return [START, *[VID] * n, END]


CASES = {
    "text only": ([[1, 2, 3, 4, 5]], None, None),
    "one image": ([[1, 2, *_image(6), 7, 8]], [[1, 4, 6]], None),
    "image + video": ([[1, *_image(4), 5, *_video(8), 9, 10]], [[1, 4, 4]], [[2, 4, 4]]),
    "video then text": ([[1, *_video(24), 9]], None, [[3, 4, 8]]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_ids_equal_transformers_get_rope_index(reference, name):
    rows, images, videos = CASES[name]
    ids = torch.tensor(rows)
    ig = None if images is None else torch.tensor(images)
    vg = None if videos is None else torch.tensor(videos)
    want, want_deltas = reference(ids, _types(ids), ig, vg, None)
    got = mrope_positions(
        ids, image_grid_thw=ig, video_grid_thw=vg, image_token_id=IMG, video_token_id=VID
    )
    assert got.position_ids.dtype == torch.float32 and got.position_ids.shape == (3, *ids.shape)
    assert torch.equal(got.position_ids, want.float())
    assert torch.equal(got.rope_deltas, want_deltas)
    # The modality can come from mm_token_type_ids instead of the token ids.
    typed = mrope_positions(
        ids, image_grid_thw=ig, video_grid_thw=vg, mm_token_type_ids=_types(ids)
    )
    assert torch.equal(typed.position_ids, got.position_ids)


def test_left_padding_equals_transformers(reference):
    a = [1, *_image(4), 5, *_video(8), 9]
    b = [1, 2, 3, *_image(8), 4, *_video(4), 5, 6, 7]
    pad = len(b) - len(a)
    ids = torch.tensor([[0] * pad + a, b])
    mask = torch.tensor([[0] * pad + [1] * len(a), [1] * len(b)])
    ig = torch.tensor([[1, 4, 4], [1, 4, 8]])
    vg = torch.tensor([[2, 4, 4], [1, 4, 4]])
    want, want_deltas = reference(ids, _types(ids), ig, vg, mask)
    got = mrope_positions(
        ids,
        image_grid_thw=ig,
        video_grid_thw=vg,
        attention_mask=mask,
        image_token_id=IMG,
        video_token_id=VID,
    )
    assert torch.equal(got.position_ids, want.float())
    assert torch.equal(got.rope_deltas, want_deltas)
    assert torch.equal(got.position_ids[:, 0, :pad], torch.zeros(3, pad))


def test_text_after_many_frames_follows_the_paper():
    # 6 frames of a 2 x 2 merged grid: the next text sits one past the largest position,
    # t = 5 (Qwen2-VL); transformers 5.23 would place it at max(H', W') = 2.
    ids = torch.tensor([[VID] * 24 + [7]])
    got = mrope_positions(ids, video_grid_thw=torch.tensor([[6, 4, 4]]), video_token_id=VID)
    assert got.position_ids[:, 0, -1].tolist() == [6.0, 6.0, 6.0]
    assert got.position_ids[0, 0, :24].max().item() == 5.0


def test_v2pe_increments_scale_every_visual_axis():
    ids = torch.tensor([[1, 2, *[IMG] * 8, 3]])  # one image, merged grid (T, H', W') = (1, 2, 4)
    ig = torch.tensor([[1, 4, 8]])
    one = mrope_positions(ids, image_grid_thw=ig, image_token_id=IMG)
    quarter = mrope_positions(ids, image_grid_thw=ig, image_token_id=IMG, delta=0.25)
    r = 1.0  # running position before the image
    vis1 = one.position_ids[:, 0, 2:10]
    vis4 = quarter.position_ids[:, 0, 2:10]
    # delta = 1: r + 1 + index; delta: r + delta * (index + 1), on each axis.
    torch.testing.assert_close(vis4, r + 0.25 * (vis1 - r), rtol=0, atol=0)
    # The image occupies ceil(delta * max(T, H', W')) = ceil(0.25 * 4) = 1 slot.
    assert quarter.position_ids[:, 0, -1].tolist() == [r + 1 + 1] * 3
    assert quarter.rope_deltas.item() == (r + 2 + 1) - ids.shape[1]


def test_packed_rows_restart_and_per_item_sampling():
    a = [1, *[IMG] * 4, 2]
    b = [3, 4, *[IMG] * 4]
    ids = torch.tensor([a + b])
    seq = torch.tensor([[0] * len(a) + [1] * len(b)])
    ig = torch.tensor([[1, 4, 4], [1, 4, 4]])
    packed = mrope_positions(ids, image_grid_thw=ig, image_token_id=IMG, sequence_ids=seq)
    alone_a = mrope_positions(torch.tensor([a]), image_grid_thw=ig[:1], image_token_id=IMG)
    alone_b = mrope_positions(torch.tensor([b]), image_grid_thw=ig[1:], image_token_id=IMG)
    assert torch.equal(
        packed.position_ids, torch.cat((alone_a.position_ids, alone_b.position_ids), dim=-1)
    )
    assert torch.equal(packed.rope_deltas, alone_b.rope_deltas)
    draws = [
        mrope_positions(
            ids,
            image_grid_thw=ig,
            image_token_id=IMG,
            delta=(1.0, 0.5, 0.25, 0.125),
            generator=torch.Generator().manual_seed(s),
        ).position_ids
        for s in (0, 0, 1, 2, 3)
    ]
    assert torch.equal(draws[0], draws[1])
    assert any(not torch.equal(draws[0], d) for d in draws[2:])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"image_grid_thw": torch.tensor([1, 4, 4])}, ValueError, "image_grid_thw"),
        ({"image_grid_thw": torch.tensor([[1, 3, 4]])}, ValueError, "spatial_merge_size"),
        ({"image_grid_thw": torch.tensor([[1, 4, 8]])}, ValueError, "consecutive"),
        ({"image_grid_thw": torch.tensor([[1, 2, 2], [1, 2, 2]])}, ValueError, "2 rows"),
        ({"image_grid_thw": None}, ValueError, "more images"),
        ({"image_token_id": "100"}, TypeError, "image_token_id"),
        ({"spatial_merge_size": 0}, ValueError, "spatial_merge_size"),
        ({"mm_token_type_ids": torch.zeros(1, 3)}, ValueError, "mm_token_type_ids"),
        ({"delta": 2.0}, ValueError, "delta"),
    ],
)
def test_bad_input_raises(kwargs, error, match):
    ids = torch.tensor([[1, IMG, IMG, IMG, IMG, 2]])
    args = {"image_token_id": IMG, "image_grid_thw": torch.tensor([[1, 4, 4]]), **kwargs}
    with pytest.raises(error, match=match):
        mrope_positions(ids, **args)


def test_empty_and_all_padding_rows():
    empty = mrope_positions(torch.zeros(2, 0, dtype=torch.long))
    assert empty.position_ids.shape == (3, 2, 0)
    padded = mrope_positions(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.zeros(1, 3))
    assert torch.equal(padded.position_ids, torch.zeros(3, 1, 3))
