"""Several processes via torchrun: 2 CPU processes (gloo) train like 1 process with the whole batch.

DistributedDataParallel averages the gradients of the ranks; each rank's gradient is the mean over its
half of the batch, so the average is the full-batch gradient and the weights after a few steps must
match a single process that saw the whole batch. This file is also the script torchrun starts:
`python -m torch.distributed.run --standalone --nproc_per_node=2 tests/test_distributed.py OUT`.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from minisora import MiniSora
from minisora.data import ShapesWorld
from minisora.checkpoint import Checkpointer
from minisora.train import train_dit, train_vae

BATCH, VAE_STEPS, DIT_STEPS = 8, 3, 2


def small_model() -> MiniSora:
    """The tiny preset, seeded, with a VAE whose sampling noise is negligible.

    The VAE draws z = mean + std * noise with noise from a per-rank generator, so 2 ranks and 1 process
    draw different noise for the same video. A log-variance bias of -30 (std ~ 3e-7, instead of the
    usual start at -8) takes that noise out of the comparison, leaving what this test is about: the
    averaging of gradients across ranks.
    """
    torch.manual_seed(0)
    model = MiniSora.from_preset("tiny")
    cfg = model.config.train
    cfg.batch_size, cfg.vae_batch_size, cfg.log_every, cfg.warmup_steps, cfg.latent_cache = BATCH, BATCH, 1, 1, 16
    head = model.vae.encoder.net[-1].conv  # last conv: mean channels, then log-variance channels
    with torch.no_grad():
        head.bias[model.vae.latent_channels:] = -30.0
    return model


def small_world() -> ShapesWorld:
    return ShapesWorld(num_frames=9, height=16, width=16, seed=0, length=64)


def worker(out: Path) -> None:
    """One torchrun process: train both stages on its half of each batch, save its weights per rank."""
    torch.set_num_threads(1)
    model, world = small_model(), small_world()
    run = out / "run"
    train_vae(model, world, steps=VAE_STEPS, out_dir=run, progress=False)
    rank = int(os.environ["RANK"])
    save_file(model.vae.state_dict(), str(out / f"vae-rank{rank}.safetensors"))
    train_dit(model, world, steps=DIT_STEPS, out_dir=run, progress=False)
    save_file(model.dit.state_dict(), str(out / f"dit-rank{rank}.safetensors"))


def relative_distance(a: dict, b: dict, start: dict) -> float:
    """||a - b|| / ||b - start|| over all float tensors: how far apart two runs ended, per unit of training."""
    apart = sum((a[k] - b[k]).double().pow(2).sum() for k in b if b[k].is_floating_point())
    moved = sum((b[k] - start[k]).double().pow(2).sum() for k in b if b[k].is_floating_point())
    return float((apart / moved).sqrt())


def test_two_processes_match_one_process_with_the_whole_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 2 processes on a 2-core CPU: one thread each
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # a test run under torchrun itself must not leak its own group into the children
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               __file__, str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # Rank 0 alone writes checkpoints (rank 1 writing too would race on the same folder).
    vae_state = Checkpointer(tmp_path / "run" / "checkpoints" / "vae").load_latest()[1]
    dit_state = Checkpointer(tmp_path / "run" / "checkpoints" / "dit").load_latest()[1]
    assert (vae_state["step"], dit_state["step"]) == (VAE_STEPS, DIT_STEPS)
    assert not list(tmp_path.glob("run/**/.tmp-*"))

    # DDP keeps the ranks in lockstep: identical weights after training, for both stages.
    ranks = [load_file(str(tmp_path / f"vae-rank{r}.safetensors")) for r in (0, 1)]
    dits = [load_file(str(tmp_path / f"dit-rank{r}.safetensors")) for r in (0, 1)]
    for key in ranks[0]:
        assert torch.allclose(ranks[0][key], ranks[1][key], atol=1e-6), key
    for key in dits[0]:
        assert torch.allclose(dits[0][key], dits[1][key], atol=1e-6), key

    # One process with the whole batch lands where the two did; one with only half a batch does not.
    world = small_world()
    start = {k: v.clone() for k, v in small_model().vae.state_dict().items()}
    whole = small_model()
    train_vae(whole, world, steps=VAE_STEPS, progress=False)
    half = small_model()
    train_vae(half, world, steps=VAE_STEPS, batch_size=BATCH // 2, progress=False)
    full_weights = whole.vae.state_dict()
    # Not 1e-6: Adam's first steps divide each gradient by its own size, so float rounding in the
    # (different) order of summation shows up at ~1e-4 in weights whose gradient is near zero.
    assert relative_distance(ranks[0], full_weights, start) < 5e-3
    assert relative_distance(half.vae.state_dict(), full_weights, start) > 0.1

    # ... and so the same loss on a fixed batch.
    video = torch.stack([world[i]["video"] for i in range(BATCH)])
    ddp_model = small_model()
    ddp_model.vae.load_state_dict(ranks[0])
    with torch.no_grad():
        ddp_loss = ddp_model.vae.loss(video, generator=torch.Generator().manual_seed(0))["loss"]
        full_loss = whole.vae.loss(video, generator=torch.Generator().manual_seed(0))["loss"]
    assert abs(ddp_loss.item() - full_loss.item()) < 1e-4 * full_loss.item()


if __name__ == "__main__":  # started by torchrun from the test above
    worker(Path(sys.argv[1]))
