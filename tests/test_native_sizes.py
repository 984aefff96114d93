"""Native sizes: batches of one (frames, height, width) each, so one model trains on every aspect ratio
and length at once, images (1 frame) included, and samples any size its patch grid allows."""

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from minisora import MiniSora
from minisora.data import ShapesWorld
from minisora.batching import BatchPlan, batch_indices, item_sizes
from minisora.train import train_dit, train_vae

# Square clips, wide clips and wide images: small, so that training a few steps costs little.
SIZES = [(5, 16, 16), (5, 16, 32), (1, 16, 32)]


def mixed(length: int = 8) -> ConcatDataset:
    return ConcatDataset([ShapesWorld(t, h, w, seed=k, length=length, return_truth=False)
                          for k, (t, h, w) in enumerate(SIZES)])


class NoSize(Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, i):
        return {"video": torch.zeros(3, 5, 8, 24), "caption": "a red circle"}


def test_item_sizes_come_from_the_parts_without_rendering():
    data = mixed(length=4)
    assert item_sizes(data) == [size for size in SIZES for _ in range(4)]
    assert item_sizes(Subset(data, [0, 5, 11])) == [SIZES[0], SIZES[1], SIZES[2]]
    assert item_sizes(NoSize()) == [(5, 8, 24)] * 3


def test_every_batch_is_one_size_and_an_epoch_uses_every_item_once():
    sizes = item_sizes(mixed(length=12))  # 36 items, 3 buckets of 12
    plan = BatchPlan(sizes, batch_size=4, seed=0)
    epoch = [plan(step) for step in range(9)]  # 3 full batches per bucket
    assert all(len({sizes[i] for i in batch}) == 1 and len(batch) == 4 for batch in epoch)
    assert sorted(i for batch in epoch for i in batch) == list(range(36))
    assert {sizes[batch[0]] for batch in epoch} == set(SIZES)
    assert [plan(step) for step in range(9)] == epoch  # a function of the step: resume sees the same data
    assert BatchPlan(sizes, 4, seed=0)(13) == plan(13) and plan(9) != plan(0)  # epochs differ, runs agree
    assert plan(9) != BatchPlan(sizes, 4, seed=1)(9)


def test_one_size_keeps_the_plain_order():
    plan = BatchPlan([(9, 32, 32)] * 20, batch_size=6, seed=3)
    assert [plan(s) for s in range(5)] == [batch_indices(s, 6, 20, seed=3) for s in range(5)]


def test_a_bucket_too_small_for_a_batch_is_refused():
    with pytest.raises(ValueError, match=r"\(1, 16, 32\).*fewer items than the batch size 4"):
        BatchPlan([(5, 16, 16)] * 8 + [(1, 16, 32)] * 3, batch_size=4, seed=0)


def test_vae_and_dit_train_on_every_size_and_the_model_samples_them():
    torch.manual_seed(0)
    model = MiniSora.from_preset("tiny")
    cfg = model.config.train
    cfg.log_every, cfg.warmup_steps, cfg.latent_cache = 1, 1, 24
    seen = {"vae": [], "dit": []}
    model.vae.register_forward_pre_hook(lambda m, args: seen["vae"].append(tuple(args[0].shape[2:])))
    hook = model.dit.register_forward_pre_hook(lambda m, args: seen["dit"].append(tuple(args[0].shape[2:])))
    data = mixed()  # 2 batches of 4 per size: 6 steps are one epoch
    vae = train_vae(model, data, steps=6, batch_size=4, progress=False)
    dit = train_dit(model, data, steps=6, batch_size=4, progress=False)
    hook.remove()
    assert set(seen["vae"]) == set(SIZES)  # training batches (and calibration) of every size
    tf, sf = model.vae.temporal_factor, model.vae.spatial_factor
    latent = {(1 + (t - 1) // tf, h // sf, w // sf) for t, h, w in SIZES}
    assert set(seen["dit"]) == latent  # images are one-latent-frame videos
    assert all(np.isfinite(loss) for _, loss in vae.history + dit.history)
    for frames, height, width in [(9, 16, 32), (1, 32, 16)]:  # sizes it never trained on
        video = model.generate("a red circle moves to the right", num_frames=frames, height=height, width=width,
                               steps=1, progress=False)
        assert video.shape == (frames, height, width, 3)
