"""Training: first the video VAE on pixels, then the DiT (with the text encoder) on the VAE's latents.

Both stages share one loop, `fit`, which a student can read top to bottom:

    for step in range(start, steps):
        batch = make_batch(step)                  # the same step always gets the same data
        loss = objective(batch, generator(step))  # ... and the same noise
        AdamW step, gradient clipping, EMA update, an atomic checkpoint every few steps

Native sizes: a dataset whose items come in several (frames, height, width), e.g. a ConcatDataset of
ShapesWorld parts at 32x32, 32x64 and 1-frame images, trains as it is. Every batch then comes from one
size bucket (minisora.batching), so one model learns every aspect ratio and length, images included, as
Sora does.

Because data and noise are functions of the step number alone, `resume=True` continues a run exactly
where its last checkpoint (minisora.checkpoint) left it: same data order, same noise, same result as a
run never stopped. Ctrl-C is held until the current step ends, then a checkpoint is written and
KeyboardInterrupt raised.

Several GPUs (or CPU processes): launch with `torchrun --nproc_per_node=N -m minisora train ...`. Each
process takes its share of every global batch and PyTorch's DistributedDataParallel averages the
gradients (nccl on GPU, gloo on CPU; arXiv:2006.15704); rank 0 alone writes checkpoints and shows progress.

Sources: AdamW (arXiv:1711.05101) with warm-up and cosine decay (arXiv:1608.03983), mixed precision
(arXiv:1710.03740), an EMA of the DiT's weights for sampling as in DiT (arXiv:2212.09748).
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import default_collate
from tqdm.auto import tqdm

from . import flow
from .batching import BatchPlan, batch_indices, item_sizes
from .checkpoint import Checkpointer, HoldInterrupt, optimizer_from_tensors, optimizer_to_tensors
from .config import FlowConfig, TrainConfig
from .data import ShapesWorld
from .evaluate import HELDOUT_SEED, evaluate_model, heldout_prompts


# ---------------------------------------------------------------------------- objectives
class VAEObjective(nn.Module):
    """Wraps the VAE so that forward(batch, generator) returns its loss dict (what DDP needs)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, batch: dict, generator: torch.Generator) -> dict:
        return self.vae.loss(batch["video"], generator=generator)


class FlowObjective(nn.Module):
    """Rectified-flow loss of the DiT on clean latents, with text dropout and conditioning frames.

    batch: {"z0": (B, C, T', H', W'), "ids": (B, L), "context_mask": (B, L) bool}
    """

    def __init__(self, text_encoder: nn.Module, dit: nn.Module, flow_cfg: FlowConfig,
                 patch_size: tuple[int, int, int]):
        super().__init__()
        self.text_encoder, self.dit, self.flow_cfg, self.patch_size = text_encoder, dit, flow_cfg, patch_size

    def forward(self, batch: dict, generator: torch.Generator) -> dict:
        z0, ids, context_mask = batch["z0"], batch["ids"], batch["context_mask"]
        cfg, device = self.flow_cfg, z0.device
        batch_size, num_latent_frames = z0.shape[0], z0.shape[2]
        # Dropping the prompt for ~10% of samples teaches the unconditional velocity for guidance.
        drop = (torch.rand(batch_size, generator=generator) < cfg.text_dropout).to(device)
        context_mask = context_mask & ~drop[:, None]
        context = self.text_encoder(ids, context_mask)
        num_tokens = math.prod(s // p for s, p in zip(z0.shape[2:], self.patch_size))
        shift = flow.resolution_shift(cfg.shift, num_tokens, cfg.base_tokens)
        t = flow.sample_t(batch_size, generator, cfg.logit_mean, cfg.logit_std, shift).to(device)
        t = t[:, None].expand(batch_size, num_latent_frames)  # one noise level per video, per frame
        eps = torch.randn(z0.shape, generator=generator).to(device)
        cond_mask = flow.conditioning_mask(batch_size, num_latent_frames, cfg.cond_probs, generator).to(device)
        loss = flow.flow_loss(lambda zt, tt: self.dit(zt, tt, context, context_mask), z0, t, eps, cond_mask)
        return {"loss": loss}


def step_generator(seed: int, stage: str, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator for the noise of one step, so resumed runs draw the same noise."""
    stage_id = {"vae": 1, "dit": 2}.get(stage, 3)
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 8 + stage_id) * 1024 + rank)


# ---------------------------------------------------------------------------- distributed
def distributed_context() -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Starts the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return rank, world_size, torch.device("cuda", local_rank)
    return rank, world_size, torch.device("cpu")


# ---------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    stage: str
    steps: int
    history: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) every log_every steps
    evals: list[dict] = field(default_factory=list)  # {"step", "minutes", metric: value} every eval_every steps
    seconds: float = 0.0
    checkpoint: str | None = None

    @property
    def final_loss(self) -> float:
        """Mean of the last few logged losses (one logged loss is noisy)."""
        tail = [loss for _, loss in self.history[-5:]]
        return sum(tail) / max(len(tail), 1)


def learning_rate(step: int, steps: int, base_lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of base_lr."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def fit(objective: nn.Module, make_batch: Callable[[int, int, int], dict], *, stage: str, steps: int,
        lr: float, train_cfg: TrainConfig, device: torch.device, checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False, use_ema: bool = False, progress: bool = True,
        evaluate: Callable[[nn.Module], dict] | None = None) -> tuple[TrainResult, nn.Module | None]:
    """Train `objective` for `steps` steps. make_batch(step, rank, world_size) -> batch dict on `device`.

    evaluate(weights) -> {metric: value}: called on rank 0 every `train_cfg.eval_every` steps and at the
    end, with the EMA copy of the objective (or the objective itself); its result goes to `result.evals`,
    the progress bar and `evals.jsonl` beside the checkpoints.
    Returns the result and the EMA copy of the objective (or None). Raises FloatingPointError when the
    loss stops being finite, and KeyboardInterrupt (after checkpointing) on Ctrl-C.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    rank, world_size, _ = distributed_context()
    objective.to(device).train()
    model = nn.parallel.DistributedDataParallel(objective) if world_size > 1 else objective
    params = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=train_cfg.weight_decay, betas=(0.9, 0.99))
    ema = AveragedModel(objective, multi_avg_fn=get_ema_multi_avg_fn(train_cfg.ema_decay)) if use_ema else None
    amp_dtype = None
    if train_cfg.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    checkpointer = Checkpointer(checkpoint_dir) if checkpoint_dir is not None else None
    result, start = TrainResult(stage=stage, steps=steps), 0

    if resume and checkpointer is not None and (loaded := checkpointer.load_latest()) is not None:
        tensors, state = loaded
        if state.get("stage") != stage or state["step"] > steps:
            raise ValueError(f"checkpoint in '{checkpoint_dir}' is from stage {state.get('stage')} at step "
                             f"{state['step']}; cannot resume stage {stage} for {steps} steps")
        objective.load_state_dict(tensors["model"])
        optimizer_from_tensors(optimizer, tensors.get("optimizer", {}), state["optimizer"])
        if ema is not None:
            ema.load_state_dict(tensors["ema"])
        start, result.history = state["step"], [tuple(h) for h in state["history"]]
        result.evals = state.get("evals", [])
        elapsed = state.get("minutes", 0.0) * 60
    else:
        elapsed = 0.0

    def save(step: int) -> None:
        if checkpointer is None or rank != 0:
            return
        opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
        groups = {"model": objective.state_dict(), "optimizer": opt_tensors}
        if ema is not None:
            groups["ema"] = ema.state_dict()
        groups = {name: {k: v.detach().cpu().contiguous() for k, v in g.items()} for name, g in groups.items()}
        path = checkpointer.save(step, groups, {"stage": stage, "optimizer": opt_meta, "history": result.history,
                                                "evals": result.evals, "minutes": minutes()})
        result.checkpoint = str(path)

    def minutes() -> float:  # training time so far, across resumes, without the time spent evaluating
        return round((elapsed + time.time() - started - eval_seconds) / 60, 3)

    def run_evaluation(step: int) -> None:
        nonlocal eval_seconds
        if evaluate is None or rank != 0:
            return
        began = time.time()
        scores = {"step": step, "minutes": minutes(), **evaluate(ema.module if ema is not None else objective)}
        objective.train()
        result.evals.append(scores)
        if checkpointer is not None:
            checkpointer.directory.mkdir(parents=True, exist_ok=True)
            with open(checkpointer.directory / "evals.jsonl", "a") as log:
                log.write(json.dumps(scores) + "\n")
        bar.set_postfix(loss=f"{loss.item():.4f}", score=f"{scores.get('overall', 0.0):.2f}")
        eval_seconds += time.time() - began

    started, eval_seconds = time.time(), 0.0
    bar = tqdm(total=steps, initial=start, desc=f"train {stage}", disable=not progress or rank != 0)
    for step in range(start, steps):
        with HoldInterrupt() as held:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, steps, lr, train_cfg.warmup_steps)
            batch = make_batch(step, rank, world_size)
            generator = step_generator(train_cfg.seed, stage, step, rank)
            autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
            with autocast:
                loss = model(batch, generator)["loss"]
            if not torch.isfinite(loss):
                bar.close()
                where = f"; the last good checkpoint is in '{checkpoint_dir}'" if checkpointer else ""
                raise FloatingPointError(f"{stage} loss became {loss.item()} at step {step}: lower the learning "
                                         f"rate (now {lr}) or keep gradient clipping on{where}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update_parameters(objective)
        if step % train_cfg.log_every == 0 or step == steps - 1:
            result.history.append((step, loss.item()))
            bar.set_postfix(loss=f"{loss.item():.4f}",
                            **({"score": f"{result.evals[-1].get('overall', 0.0):.2f}"} if result.evals else {}))
        bar.update(1)
        # Every eval_every steps, and at the end of a run long enough to have reached one of those.
        if train_cfg.eval_every and ((step + 1) % train_cfg.eval_every == 0
                                     or (step == steps - 1 and steps >= train_cfg.eval_every)):
            run_evaluation(step + 1)
        if held.pressed or (step + 1) % train_cfg.checkpoint_every == 0 or step == steps - 1:
            save(step + 1)
        if held.pressed:
            bar.close()
            raise KeyboardInterrupt(f"{stage} training stopped at step {step + 1}; checkpoint saved in "
                                    f"'{checkpoint_dir}', continue with resume=True (--resume)")
    bar.close()
    result.seconds = time.time() - started
    return result, ema


# ---------------------------------------------------------------------------- the two stages
def _collate(dataset, indices: list[int], device: torch.device) -> dict:
    batch = default_collate([dataset[i] for i in indices])
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items() if k != "truth"}


def _settings(steps, batch_size, lr, presets: tuple[int, int, float]) -> tuple[int, int, float]:
    """(steps, batch_size, lr): None takes the preset's value; an explicit value is used as given, and
    refused (ValueError) when no training can run with it, e.g. steps=0 or lr=0."""
    given = (steps, batch_size, lr)
    steps, batch_size, lr = (preset if value is None else value for value, preset in zip(given, presets))
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r} (leave it out for the preset's)")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf:
        raise ValueError(f"lr must be a number > 0, such as 3e-4, got {lr!r} (leave it out for the preset's)")
    return steps, batch_size, float(lr)


def _check_batch(batch_size: int, world_size: int) -> None:
    if batch_size % world_size:
        raise ValueError(f"batch size {batch_size} must be divisible by the number of processes ({world_size})")


def train_vae(model, dataset, *, steps: int | None = None, batch_size: int | None = None, lr: float | None = None,
              out_dir: str | os.PathLike | None = None, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train `model.vae` on `dataset` videos, then calibrate its latent scale. Returns the TrainResult.

    Items of several sizes (see `item_sizes`) train in batches of one size each. Checkpoints go to
    out_dir/checkpoints/vae when out_dir is given.
    """
    cfg = model.config.train
    steps, batch_size, lr = _settings(steps, batch_size, lr, (cfg.vae_steps, cfg.vae_batch_size, cfg.vae_lr))
    rank, world_size, device = distributed_context()
    _check_batch(batch_size, world_size)
    model.to(device)
    plan = BatchPlan(item_sizes(dataset), batch_size, cfg.seed)

    def make_batch(step: int, rank: int, world_size: int) -> dict:
        return _collate(dataset, plan(step)[rank::world_size], device)

    checkpoint_dir = Path(out_dir) / "checkpoints" / "vae" if out_dir is not None else None
    result, _ = fit(VAEObjective(model.vae), make_batch, stage="vae", steps=steps, lr=lr, train_cfg=cfg,
                    device=device, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress)
    model.vae.eval()
    with torch.no_grad():  # latents scaled to unit variance make the DiT's noise level meaningful
        model.vae.calibrate([make_batch(s, 0, 1)["video"] for s in range(max(1, 64 // batch_size))])
    return result


def _heldout_check(model, dataset) -> Callable[[nn.Module], dict] | None:
    """evaluate(weights) for `fit`: the mean evaluator scores of `eval_prompts` held-out prompts, one video
    each, sampled with `weights` (a FlowObjective: text encoder + DiT) in place of the model's own.
    Only for the shapes world, whose captions the evaluator can read (None otherwise)."""
    if model.config.data.dataset != "shapes" or not all(
            isinstance(part, ShapesWorld) for part in getattr(dataset, "datasets", [dataset])):
        return None
    data = model.config.data
    prompts = heldout_prompts(model.config.train.eval_prompts, data.max_objects, data.gravity, data.occluder)

    def check(weights: nn.Module) -> dict:
        own = model.text_encoder, model.dit
        model.text_encoder, model.dit = weights.text_encoder, weights.dit
        try:
            results = evaluate_model(model, prompts, samples=1, seed=HELDOUT_SEED, progress=False)
        finally:
            model.text_encoder, model.dit = own
        return {name: round(value, 4) for name, value in results["mean"].items()}

    return check


def train_dit(model, dataset, *, steps: int | None = None, batch_size: int | None = None, lr: float | None = None,
              out_dir: str | os.PathLike | None = None, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train `model.dit` and `model.text_encoder` on latents of the (frozen) VAE; keep the EMA weights.

    Native sizes: give a dataset of several sizes, each batch is one size (`BatchPlan`), e.g.

        sizes = [(9, 32, 32), (9, 32, 64), (1, 32, 64)]       # square, wide, wide images
        data = ConcatDataset([ShapesWorld(t, h, w, seed=i) for i, (t, h, w) in enumerate(sizes)])
        train_vae(model, data);  train_dit(model, data)        # then model.generate(..., height=32, width=64)

    Checkpoints go to out_dir/checkpoints/dit when out_dir is given.
    """
    cfg = model.config.train
    steps, batch_size, lr = _settings(steps, batch_size, lr, (cfg.dit_steps, cfg.batch_size, cfg.dit_lr))
    rank, world_size, device = distributed_context()
    _check_batch(batch_size, world_size)
    model.to(device)
    model.vae.eval().requires_grad_(False)

    def encode(indices: list[int]) -> dict:
        batch = _collate(dataset, indices, device)
        with torch.no_grad():
            z0 = model.vae.encode_latent(batch["video"])
        ids, context_mask = model.tokenizer.encode(batch["caption"], model.config.text.max_len)
        return {"z0": z0, "ids": ids.to(device), "context_mask": context_mask.to(device)}

    sizes = item_sizes(dataset)
    if cfg.latent_cache:
        # On a CPU the VAE encoder costs more than a DiT step, so encode a fixed pool of videos once,
        # size by size (a batch holds one size), and keep one latent entry per pool item.
        pool_indices = batch_indices(0, min(cfg.latent_cache, len(dataset)), len(dataset), cfg.seed + 1)
        by_size: dict[tuple, list[int]] = {}
        for slot, index in enumerate(pool_indices):
            by_size.setdefault(sizes[index], []).append(slot)
        chunks = [slots[i:i + batch_size] for slots in by_size.values() for i in range(0, len(slots), batch_size)]
        pool: list[dict] = [{}] * len(pool_indices)
        for slots in tqdm(chunks, desc="encode latents", disable=not progress or rank != 0, leave=False):
            encoded = encode([pool_indices[slot] for slot in slots])
            for row, slot in enumerate(slots):
                pool[slot] = {key: value[row] for key, value in encoded.items()}
        plan = BatchPlan([sizes[index] for index in pool_indices], batch_size, cfg.seed + 2)

        def make_batch(step: int, rank: int, world_size: int) -> dict:
            return default_collate([pool[slot] for slot in plan(step)[rank::world_size]])
    else:
        plan = BatchPlan(sizes, batch_size, cfg.seed + 1)

        def make_batch(step: int, rank: int, world_size: int) -> dict:
            return encode(plan(step)[rank::world_size])

    checkpoint_dir = Path(out_dir) / "checkpoints" / "dit" if out_dir is not None else None
    objective = FlowObjective(model.text_encoder, model.dit, model.config.flow, model.config.dit.patch_size)
    result, ema = fit(objective, make_batch, stage="dit", steps=steps, lr=lr, train_cfg=cfg, device=device,
                      checkpoint_dir=checkpoint_dir, resume=resume, use_ema=True, progress=progress,
                      evaluate=_heldout_check(model, dataset) if cfg.eval_prompts else None)
    objective.load_state_dict(ema.module.state_dict())  # sample with the smoother EMA weights
    model.vae.requires_grad_(True)
    model.eval()
    return result
