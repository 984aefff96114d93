"""Training loops: losses fall, checkpoints are atomic, resume is exact, Ctrl-C and NaN are handled."""

import json
import os
import signal

import pytest
import torch

from minisora import MiniSora
from minisora.batching import batch_indices
from minisora.checkpoint import Checkpointer
from minisora.data import ShapesWorld
from minisora.train import train_dit, train_vae


def small_model(**train):
    torch.manual_seed(0)
    model = MiniSora.from_preset("tiny")
    cfg = model.config.train
    cfg.batch_size, cfg.log_every, cfg.warmup_steps, cfg.checkpoint_every, cfg.latent_cache = 4, 1, 2, 3, 16
    cfg.vae_batch_size = 4
    for key, value in train.items():
        setattr(cfg, key, value)
    return model


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(num_frames=9, height=32, width=32, seed=0, length=256)


def test_batch_order_is_a_function_of_the_step():
    a = [batch_indices(s, 6, 20, seed=3) for s in range(8)]
    b = [batch_indices(s, 6, 20, seed=3) for s in range(8)]
    assert a == b
    first_epoch = sum(a[:3], []) + a[3][:2]  # 20 items = 3 full batches + 2
    assert sorted(first_epoch) == list(range(20))


def test_vae_loss_falls(world):
    model = small_model()
    result = train_vae(model, world, steps=60, lr=3e-3, progress=False)
    losses = [loss for _, loss in result.history]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:3]) / 3
    # calibration leaves latents at roughly unit scale for the DiT
    z = model.vae.encode_latent(torch.stack([world[i]["video"] for i in range(16)]))
    assert 0.5 < z.std().item() < 2.0


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_after_ctrl_c_matches_an_uninterrupted_run(world, tmp_path):
    straight = small_model()
    train_dit(straight, world, steps=6, out_dir=tmp_path / "straight", progress=False)

    stopped = small_model()
    original_forward = stopped.dit.forward
    calls = {"n": 0}

    def forward_then_press_ctrl_c(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # during the second step: Ctrl-C is held until the step ends
            os.kill(os.getpid(), signal.SIGINT)
        return original_forward(*args, **kwargs)

    stopped.dit.forward = forward_then_press_ctrl_c
    with pytest.raises(KeyboardInterrupt, match="resume"):
        train_dit(stopped, world, steps=6, out_dir=tmp_path / "run", progress=False)
    tensors, state = Checkpointer(tmp_path / "run" / "checkpoints" / "dit").load_latest()
    assert state["step"] == 2

    resumed = small_model()
    resumed.vae.load_state_dict(stopped.vae.state_dict())
    train_dit(resumed, world, steps=6, out_dir=tmp_path / "run", resume=True, progress=False)
    a, b = _weights(straight), _weights(resumed)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_checkpoints_are_complete_folders(world, tmp_path):
    model = small_model()
    train_vae(model, world, steps=7, out_dir=tmp_path, progress=False)
    folder = tmp_path / "checkpoints" / "vae"
    assert (folder / "latest").read_text() == "step-0000007"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("step-")) == ["step-0000006", "step-0000007"]
    assert not list(folder.glob(".tmp-*"))


def test_damaged_checkpoint_says_where(world, tmp_path):
    model = small_model()
    train_vae(model, world, steps=3, out_dir=tmp_path, progress=False)
    (tmp_path / "checkpoints" / "vae" / "step-0000003" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="step-0000003"):
        train_vae(small_model(), world, steps=6, out_dir=tmp_path, resume=True, progress=False)


class NaNWorld(torch.utils.data.Dataset):
    def __init__(self, world):
        self.world = world

    def __len__(self):
        return 8

    def __getitem__(self, i):
        item = dict(self.world[i])
        item["video"] = torch.full_like(item["video"], float("nan"))
        return item


def test_nan_loss_stops_with_a_clear_message(world):
    with pytest.raises(FloatingPointError, match="learning rate"):
        train_vae(small_model(), NaNWorld(world), steps=3, progress=False)


@pytest.mark.parametrize("setting,value", [("steps", 0), ("lr", 0.0), ("batch_size", 0), ("steps", -5)])
@pytest.mark.parametrize("train", [train_vae, train_dit])
def test_an_explicit_setting_is_used_as_given_not_replaced_by_the_preset(world, monkeypatch, train, setting, value):
    from minisora import train as train_module

    def fit(*args, **kwargs):
        raise AssertionError(f"trained with {kwargs['steps']} steps, lr {kwargs['lr']} instead of refusing")

    monkeypatch.setattr(train_module, "fit", fit)
    with pytest.raises(ValueError, match=f"{setting} must be"):
        train(small_model(latent_cache=0), world, progress=False, **{setting: value})


def test_dit_training_scores_held_out_prompts_as_it_goes(world, tmp_path):
    model = small_model(eval_every=2, eval_prompts=2)
    result = train_dit(model, world, steps=5, out_dir=tmp_path, progress=False)
    # Every 2 steps and at the end; each entry holds the evaluator's metrics over the held-out prompts.
    assert [e["step"] for e in result.evals] == [2, 4, 5]
    assert all(0 <= e["overall"] <= 1 and 0 <= e["presence"] <= 1 and e["minutes"] >= 0 for e in result.evals)
    logged = [json.loads(line) for line in (tmp_path / "checkpoints" / "dit" / "evals.jsonl").read_text().splitlines()]
    assert logged == result.evals
    # A resumed run keeps the scores it had and adds the new ones.
    resumed = small_model(eval_every=2, eval_prompts=2)
    again = train_dit(resumed, world, steps=7, out_dir=tmp_path, resume=True, progress=False)
    assert [e["step"] for e in again.evals] == [2, 4, 5, 6, 7]
    # Runs shorter than eval_every (smoke tests, the CI demo) never stop to evaluate.
    assert train_dit(small_model(eval_every=10, eval_prompts=2), world, steps=3, progress=False).evals == []
