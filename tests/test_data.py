"""Datasets: one item format for every source, offline, with clear errors for broken inputs."""

import json

import datasets
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader

from minisora import world
from minisora.config import DataConfig
from minisora.batching import BucketBatchSampler
from minisora.data import HFVideoDataset, MovingDigits, ShapesWorld, VideoFolder, make_dataset, mnist_dataset
from minisora.frames import fit_video


def check_item(item, size):
    video = item["video"]
    assert video.shape == (3, *size) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1
    assert isinstance(item["caption"], str) and item["caption"]


def test_shapes_world_items_are_deterministic_and_well_formed():
    ds = ShapesWorld(num_frames=5, height=16, width=24, seed=3, length=50, max_objects=3, gravity=True,
                     occluder=True)
    item = ds[7]
    check_item(item, (5, 16, 24))
    assert ds.size == (5, 16, 24)
    again, other = ds[7], ShapesWorld(5, 16, 24, seed=4, length=50, max_objects=3)[7]
    assert torch.equal(item["video"], again["video"]) and item["caption"] == again["caption"]
    assert not torch.equal(item["video"], other["video"])
    assert torch.equal(ds[-1]["video"], ds[49]["video"])
    with pytest.raises(IndexError):
        ds[50]
    truth = item["truth"]
    n = int(truth["present"].sum())
    assert truth["present"].shape == (3,) and truth["present"][:n].all() and not truth["present"][n:].any()
    assert truth["position"].shape == (5, 3, 2) and truth["mask"].shape == (5, 3, 16, 24)
    assert (truth["shape"][n:] == -1).all() and (truth["shape"][:n] >= 0).all()
    assert not truth["mask"][:, n:].any()
    # the caption names the objects the truth holds
    parsed = world.parse_caption(item["caption"])
    assert [world.SHAPES[s] for s in truth["shape"][:n]] == [o.shape for o in parsed.objects]


def test_shapes_world_truth_matches_pixels():
    item = ShapesWorld(seed=1, length=10)[2]
    video = (item["video"] + 1) * 127.5
    truth = item["truth"]
    for k in np.flatnonzero(truth["present"]):
        pixels = video.permute(1, 2, 3, 0)[truth["mask"][:, k]]  # (N, 3) visible pixels of object k
        if len(pixels):
            assert (pixels.median(0).values - truth["rgb"][k].float()).abs().max() < 60


def test_shapes_world_batches_with_default_collate():
    ds = ShapesWorld(seed=0, length=16, max_objects=3)
    batch = next(iter(DataLoader(ds, batch_size=8)))
    assert batch["video"].shape == (8, 3, 9, 32, 32)
    assert len(batch["caption"]) == 8
    assert batch["truth"]["mask"].shape == (8, 9, 3, 32, 32) and batch["truth"]["present"].shape == (8, 3)
    assert 1 <= batch["truth"]["present"].sum(1).min() and batch["truth"]["present"].sum(1).max() <= 3
    assert "truth" not in ShapesWorld(length=4, return_truth=False)[0]


def test_shapes_world_from_config_holdout_and_vocabulary():
    cfg = DataConfig(num_frames=5, height=16, width=16, max_objects=2, gravity=True)
    ds = ShapesWorld.from_config(cfg, seed=0, length=300, holdout=[("red", "circle")])
    assert ds.size == (5, 16, 16) and len(ds) == 300
    captions = ds.captions
    assert len(captions) == 300 and captions[5] == ds[5]["caption"]
    assert any("gravity" in c for c in captions)
    for c in captions:
        assert all((o.color, o.shape) != ("red", "circle") for o in world.parse_caption(c).objects)
        assert set(world.split_words(c)) <= set(ds.vocabulary())
    with pytest.raises(ValueError, match="max_objects"):
        ShapesWorld(max_objects=0)


def test_moving_digits_from_bundled_sklearn_digits():
    ds = MovingDigits(num_frames=9, height=32, width=48, seed=0, length=20, max_digits=2)
    item = ds[3]
    check_item(item, (9, 32, 48))
    assert torch.equal(item["video"][0], item["video"][1])  # gray
    assert item["video"].max() > 0.5 and item["video"].min() == -1
    assert torch.equal(ds[3]["video"], item["video"]) and ds[3]["caption"] == item["caption"]
    captions = [ds[i]["caption"] for i in range(20)]
    assert all(c.startswith("the digit ") for c in captions)
    assert any(" and the digit " in c for c in captions)
    assert all(set(world.split_words(c)) <= set(ds.vocabulary()) for c in captions)
    moving = [ds[i] for i in range(20) if "still" not in ds[i]["caption"] and "not move" not in ds[i]["caption"]]
    assert all(not torch.equal(m["video"][:, 0], m["video"][:, -1]) for m in moving)


def test_mnist_offline_fails_fast_naming_moving_digits(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    with pytest.raises(ConnectionError, match="MovingDigits"):
        mnist_dataset()
    with pytest.raises(ConnectionError, match="dataset='digits'"):
        make_dataset(DataConfig(dataset="mnist"))


def test_mnist_images_become_moving_digits(monkeypatch):
    rng = np.random.default_rng(0)
    fake = datasets.Dataset.from_dict({"image": [Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8))
                                                 for _ in range(4)], "label": [0, 1, 2, 3]})
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: fake)
    ds = mnist_dataset(num_frames=5, height=32, width=32, length=3)
    check_item(ds[0], (5, 32, 32))
    assert ds.images.shape == (4, 28, 28) and ds.images.max() <= 1


def write_clip(path, frames, **kwargs):
    iio.imwrite(path, frames, **kwargs)
    return path.name


def coloured_frames(T, H, W, rgb):
    frames = np.zeros((T, H, W, 3), dtype=np.uint8)
    frames[:] = rgb
    frames[:, :, : W // 4] = 0  # a dark strip on the left, cropped away for square outputs
    frames[np.arange(T), 0, np.arange(T) % (W // 4)] = 255  # frames must differ: GIF merges equal ones
    return frames


def test_video_folder_reads_gif_and_mp4_with_csv_or_jsonl(tmp_path):
    gif = write_clip(tmp_path / "red.gif", coloured_frames(6, 24, 48, (255, 0, 0)), duration=100, loop=0)
    mp4 = write_clip(tmp_path / "green.mp4", coloured_frames(10, 32, 64, (0, 255, 0)), fps=8)
    (tmp_path / "captions.csv").write_text(f'file,caption\n{gif},"a red, red screen"\n{mp4},green\n')
    ds = VideoFolder(tmp_path, num_frames=5, height=16, width=16)
    assert len(ds) == 2 and ds.size == (5, 16, 16)
    red, green = ds[0], ds[1]
    check_item(red, (5, 16, 16))
    check_item(green, (5, 16, 16))
    assert red["caption"] == "a red, red screen"
    # the centre crop drops the dark strip; colours survive (mp4 compression is lossy)
    assert red["video"][0].mean() > 0.9 and red["video"][1].mean() < -0.9
    assert green["video"][1].mean() > 0.8 and green["video"][0].mean() < -0.8
    (tmp_path / "captions.csv").unlink()
    lines = [json.dumps({"file": gif, "caption": "red"}), json.dumps({"file": mp4, "caption": "green"})]
    (tmp_path / "clips.jsonl").write_text("\n".join(lines) + "\n")
    ds = VideoFolder(tmp_path, "clips.jsonl", num_frames=3, height=8, width=12)
    check_item(ds[1], (3, 8, 12))


def test_video_folder_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VideoFolder(tmp_path / "nope")
    gif = write_clip(tmp_path / "a.gif", coloured_frames(3, 16, 16, (0, 0, 255)), duration=100)
    with pytest.raises(FileNotFoundError, match="captions.csv"):
        VideoFolder(tmp_path)
    (tmp_path / "captions.csv").write_text(f"file,caption\n{gif},blue\nmissing.mp4,gone\n")
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        VideoFolder(tmp_path)
    write_clip(tmp_path / "b.gif", coloured_frames(3, 16, 16, (0, 0, 255)), duration=100)
    (tmp_path / "captions.csv").write_text(f"file,caption\n{gif},blue\n")
    with pytest.raises(ValueError, match="without a caption.*b.gif"):
        VideoFolder(tmp_path)
    (tmp_path / "b.gif").unlink()
    (tmp_path / "captions.csv").write_text(f"file,caption\n{gif},\n")
    with pytest.raises(ValueError, match="non-empty 'caption'"):
        VideoFolder(tmp_path)
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all" * 10)
    (tmp_path / "captions.csv").write_text(f"file,caption\n{gif},blue\nbroken.mp4,broken\n")
    ds = VideoFolder(tmp_path, num_frames=3, height=8, width=8)
    check_item(ds[0], (3, 8, 8))
    with pytest.raises(ValueError, match="cannot read video .*broken.mp4"):
        ds[1]
    with pytest.raises(ValueError, match="has 3 frames but num_frames=9"):
        VideoFolder(tmp_path, num_frames=9, height=8, width=8)[0]


def test_hf_dataset_of_images_and_of_videos():
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((20, 30, 3)) * 255).astype(np.uint8)) for _ in range(3)]
    table = datasets.Dataset.from_dict({"image": images, "text": ["one", "two", "three"]})
    ds = HFVideoDataset(table, "text", image_column="image", height=16, width=16)
    assert len(ds) == 3 and ds.size == (1, 16, 16)
    check_item(ds[2], (1, 16, 16))
    assert ds[2]["caption"] == "three"
    clips = (rng.random((2, 6, 12, 12, 3)) * 255).astype(np.uint8)
    table = datasets.Dataset.from_dict({"frames": clips.tolist(), "caption": ["a", "b"]})
    ds = HFVideoDataset(table, "caption", video_column="frames", num_frames=4, height=12, width=12)
    item = ds[1]
    check_item(item, (4, 12, 12))
    np.testing.assert_allclose((item["video"].permute(1, 2, 3, 0).numpy() + 1) * 127.5, clips[1, :4], atol=1e-3)
    with pytest.raises(ValueError, match="6 frames but num_frames=8"):
        HFVideoDataset(table, "caption", video_column="frames", num_frames=8)[0]
    with pytest.raises(ValueError, match="columns are"):
        HFVideoDataset(table, "label", video_column="frames")
    with pytest.raises(ValueError, match="exactly one"):
        HFVideoDataset(table, "caption", video_column="frames", image_column="frames")


def test_fit_video_crops_to_aspect_and_handles_gray_and_alpha():
    frames = np.zeros((2, 10, 40), dtype=np.uint8)
    frames[:, :, 15:25] = 255  # a bright middle strip, the part a square crop keeps
    video = fit_video(frames, 5, 5)
    assert video.shape == (3, 2, 5, 5) and video.min() > 0.9
    rgba = np.full((1, 8, 8, 4), 0.5, dtype=np.float32)
    assert torch.allclose(fit_video(rgba, 4, 4), torch.zeros(3, 1, 4, 4))
    with pytest.raises(ValueError, match="expected frames"):
        fit_video(np.zeros((2, 8, 8, 2)), 4, 4)


def test_make_dataset_picks_each_source(tmp_path):
    cfg = DataConfig(num_frames=5, height=16, width=16)
    assert isinstance(make_dataset(cfg, seed=1, length=10, root=None, captions_file=None), ShapesWorld)
    cfg.dataset = "digits"
    assert isinstance(make_dataset(cfg, length=10), MovingDigits)
    cfg.dataset = "folder"
    with pytest.raises(ValueError, match="root="):
        make_dataset(cfg, root=None)
    gif = write_clip(tmp_path / "a.gif", coloured_frames(5, 16, 16, (0, 0, 255)), duration=100)
    (tmp_path / "captions.csv").write_text(f"file,caption\n{gif},blue\n")
    check_item(make_dataset(cfg, root=tmp_path)[0], (5, 16, 16))
    cfg.dataset = "hf"
    table = datasets.Dataset.from_dict({"image": [np.zeros((8, 8, 3), dtype=np.uint8)], "c": ["x"]})
    check_item(make_dataset(cfg, hf_dataset=table, caption_column="c", image_column="image")[0], (1, 16, 16))
    cfg.dataset = "kinetics"
    with pytest.raises(ValueError, match="choose one of"):
        make_dataset(cfg)


def test_bucket_batch_sampler_groups_sizes_deterministically():
    sizes = [(9, 32, 32)] * 10 + [(9, 32, 48)] * 7 + [(1, 32, 32)] * 5
    sampler = BucketBatchSampler(sizes, batch_size=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3 + 2 + 2
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    assert all(len({sizes[i] for i in b}) == 1 for b in batches)
    assert batches == list(BucketBatchSampler(sizes, batch_size=4, seed=0))
    sampler.set_epoch(1)
    assert list(sampler) != batches and list(sampler) == list(sampler)
    dropped = list(BucketBatchSampler(sizes, batch_size=4, seed=0, drop_last=True))
    assert len(dropped) == len(BucketBatchSampler(sizes, 4, drop_last=True)) == 2 + 1 + 1
    assert all(len(b) == 4 for b in dropped)
    with pytest.raises(ValueError, match="batch_size"):
        BucketBatchSampler(sizes, batch_size=0)


def test_bucket_sampler_trains_several_sizes_through_one_dataloader():
    parts = [ShapesWorld(5, 16, 16, length=6), ShapesWorld(5, 16, 24, seed=1, length=6)]
    data = ConcatDataset(parts)
    sizes = [part.size for part in parts for _ in range(len(part))]
    loader = DataLoader(data, batch_sampler=BucketBatchSampler(sizes, batch_size=4, seed=0))
    shapes = {tuple(batch["video"].shape) for batch in loader}
    assert shapes == {(4, 3, 5, 16, 16), (2, 3, 5, 16, 16), (4, 3, 5, 16, 24), (2, 3, 5, 16, 24)}


@pytest.mark.parametrize("dataset", ["digits", "folder"])
def test_cli_trains_a_vae_on_every_dataset_with_its_own_words(dataset, tmp_path, capsys):
    from minisora import MiniSora
    from minisora.__main__ import main

    flags = ["--dataset", dataset]
    if dataset == "folder":
        clips = tmp_path / "clips"
        clips.mkdir()
        write_clip(clips / "sunset.gif", coloured_frames(9, 16, 16, (255, 120, 0)), duration=100, loop=0)
        (clips / "captions.csv").write_text('file,caption\nsunset.gif,"an orange sunset"\n')
        flags += ["--data-root", str(clips)]
    out = tmp_path / "run"
    assert main(["train-vae", *flags, "--steps", "1", "--batch-size", "2", "--out", str(out), "--no-progress"]) == 0
    words = MiniSora.from_pretrained(out / "model").tokenizer.vocab
    assert ("digit" if dataset == "digits" else "sunset") in words, capsys.readouterr().err


def test_every_dataset_has_a_vocabulary_of_its_captions(tmp_path):
    write_clip(tmp_path / "a.gif", coloured_frames(3, 8, 8, (0, 0, 255)), duration=100, loop=0)
    (tmp_path / "captions.csv").write_text('file,caption\na.gif,"A blue screen, glowing!"\n')
    assert VideoFolder(tmp_path, num_frames=3, height=8, width=8).vocabulary() == ["a", "blue", "glowing", "screen"]
    table = datasets.Dataset.from_dict({"image": [np.zeros((4, 4, 3), np.uint8)] * 2,
                                        "text": ["a red dot", "a Red square"]})
    assert HFVideoDataset(table, "text", image_column="image").vocabulary() == ["a", "dot", "red", "square"]
    assert {"the", "digit", "7"} <= set(MovingDigits.vocabulary())
    assert ShapesWorld.vocabulary() == world.vocabulary()
