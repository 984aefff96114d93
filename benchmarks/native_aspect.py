"""Native aspect ratios against square crops, as in Sora's report ("Improved framing and composition").

    python benchmarks/native_aspect.py                    # ~15 min of one CPU core (OMP_NUM_THREADS=1)
    python benchmarks/native_aspect.py --write-results    # ... and append the tables to benchmarks/RESULTS.md
    python benchmarks/native_aspect.py --smoke            # a few steps of everything: checks the script runs

Sora's report trained one model on videos at their native aspect ratios and one on square crops of them,
and found the square-crop model often leaves its subject partly out of the picture. Here:

    data     shapes-world clips at their native sizes: 9x32x32, 9x32x64 (wide) and 1x32x64 (wide images,
             joint image + video training). Every object is whole in every frame: the world bounces
             objects off its walls.
    native   trained on them as they are, a batch per size (minisora.batching.BatchPlan)
    square   trained on the same items centre-cropped to 32x32: wide clips lose their sides, and objects
             there with them, while the caption still names them (what cropping does to real data)

Both share one VAE (trained once on the native data), the same initial weights, steps, batch and seed.
Both are sampled at 32x64 (wide) and at 32x32 for the same prompts and seeds, and measured with
minisora.evaluate.score and two framing numbers per asked object and frame:

    in frame   the share of the object's area that is visible (blob area / its world area, at most 1;
               0 when the object is not found)
    whole      the share of frames where the object is found and does not touch the picture's edge

A second table measures the prompting modes on the native model (minisora.prompting): the loop seam
(seam error / mean frame-to-frame error, ~1 = seamless), and how extension continues a real clip's
motion (cosine between the object's velocity before and after the cut, and its speed ratio).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from minisora import MiniSora, world
from minisora.data import ShapesWorld
from minisora.evaluate import mean_scores, score
from minisora.perceive import find_objects
from minisora.prompting import loop_seam
from minisora.train import train_dit, train_vae

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is a folder of scripts
from common import RESULTS, write_results  # noqa: E402
SIZES = [(9, 32, 32), (9, 32, 64), (1, 32, 64)]  # (frames, height, width) of the native data
PROMPTS = [
    "a small red circle moves to the right",
    "a medium blue square moves to the left",
    "a large green triangle moves to the right",
    "a medium yellow diamond moves to the left",
    "a small purple square moves up",
    "a medium red triangle moves down",
    "a large blue circle moves to the left",
    "a small green diamond moves to the right",
]


class SquareCrops(Dataset):
    """Items of `dataset` centre-cropped to squares of side min(height, width); captions unchanged."""

    def __init__(self, dataset):
        self.dataset = dataset
        frames, height, width = dataset.size
        self.size = (frames, min(height, width), min(height, width))

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        _, _, height, width = item["video"].shape
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        return {"video": item["video"][:, :, top:top + side, left:left + side].contiguous(), "caption": item["caption"]}


def framing(video: np.ndarray, prompt: str) -> dict[str, float]:
    """{"in frame", "whole"} of the objects the prompt asks for (see the module docstring)."""
    blobs, _ = find_objects(video)
    frames, height, width = video.shape[:3]
    visible, whole = [], []
    for spec in world.parse_caption(prompt).objects:
        area = np.pi * (world.SIZES[spec.size] * min(height, width)) ** 2
        for t in range(frames):
            mine = [b for b in blobs if b.frame == t and b.color == spec.color]
            blob = max(mine, key=lambda b: b.area, default=None)
            visible.append(0.0 if blob is None else min(1.0, blob.area / area))
            top, left, bottom, right = blob.box if blob is not None else (0, 0, 0, 0)
            whole.append(blob is not None and top > 0 and left > 0 and bottom < height - 1 and right < width - 1)
    return {"in frame": float(np.mean(visible)), "whole": float(np.mean(whole))}


def velocity(video: np.ndarray, color: str) -> np.ndarray | None:
    """Mean displacement per frame (dx, dy) of the largest blob of `color`, or None if seen < 2 times."""
    blobs, _ = find_objects(video)
    track = {}
    for b in blobs:
        if b.color == color and (b.frame not in track or b.area > track[b.frame].area):
            track[b.frame] = b
    frames = sorted(track)
    if len(frames) < 2:
        return None
    first, last = track[frames[0]], track[frames[-1]]
    return np.array([last.x - first.x, last.y - first.y]) / (frames[-1] - frames[0])


def continuity(given: np.ndarray, new: np.ndarray, prompt: str) -> tuple[float, float] | None:
    """(cosine, speed ratio) between the asked object's velocity in the given clip and in the new frames."""
    color = world.parse_caption(prompt).objects[0].color
    before, after = velocity(given, color), velocity(new, color)
    if before is None or after is None or np.linalg.norm(before) < 1e-6:
        return None
    cosine = float(before @ after / (np.linalg.norm(before) * max(np.linalg.norm(after), 1e-6)))
    return cosine, float(np.linalg.norm(after) / np.linalg.norm(before))


def train_models(args) -> tuple[dict[str, MiniSora], float]:
    """The native and the square model, sharing one VAE. Returns them and the CPU seconds spent."""
    started = time.process_time()
    parts = [ShapesWorld(t, h, w, seed=k, length=args.items, return_truth=False) for k, (t, h, w) in enumerate(SIZES)]
    data = {"native": ConcatDataset(parts), "square": ConcatDataset([SquareCrops(p) for p in parts])}
    torch.manual_seed(args.seed)
    vae_model = MiniSora.from_preset("tiny")
    vae_model.config.train.seed = args.seed
    print(f"VAE: {args.vae_steps} steps on native sizes {SIZES}")
    train_vae(vae_model, data["native"], steps=args.vae_steps, progress=args.progress)
    models = {}
    for name in ("native", "square"):
        torch.manual_seed(args.seed)  # the same initial DiT and text encoder for both
        model = MiniSora.from_preset("tiny")
        model.vae.load_state_dict(vae_model.vae.state_dict())
        model.config.train.seed, model.config.train.latent_cache = args.seed, args.cache
        print(f"DiT ({name}): {args.dit_steps} steps")
        result = train_dit(model, data[name], steps=args.dit_steps, progress=args.progress)
        print(f"  final flow loss {result.final_loss:.4f}")
        models[name] = model
    return models, time.process_time() - started


def aspect_table(models: dict[str, MiniSora], args) -> list[list[str]]:
    """Rows: (model, size, evaluator overall, presence, shape, direction, in frame, whole)."""
    rows = []
    for height, width in ((32, 64), (32, 32)):
        # References: real videos of that size, and at 32x32 what the square model learnt from: the middle
        # of wide videos.
        references = ["real videos"] + (["real 32x64 videos cropped to 32x32"] if width == height else [])
        for name in (*references, *models):
            scores, frames = [], []
            for prompt in PROMPTS[:args.prompts]:
                for seed in range(args.samples):
                    if name in models:
                        video = models[name].generate(prompt, height=height, width=width, seed=seed,
                                                      steps=args.steps, progress=False)
                    elif "cropped" in name:
                        video = world.render(prompt, 9, height, 2 * width, seed=100 + seed).video
                        video = np.ascontiguousarray(video[:, :, width // 2:width // 2 + width])
                    else:
                        video = world.render(prompt, 9, height, width, seed=100 + seed).video
                    scores.append(score(video, prompt))
                    frames.append(framing(video, prompt))
            mean = mean_scores(scores)
            rows.append([name, f"{height}x{width}", *(f"{mean.get(k, float('nan')):.2f}" for k in
                                                      ("overall", "presence", "shape", "direction")),
                         f"{np.mean([f['in frame'] for f in frames]):.2f}",
                         f"{np.mean([f['whole'] for f in frames]):.2f}"])
            print(" | ".join(rows[-1]))
    return rows


def prompting_table(model: MiniSora, args) -> list[list[str]]:
    """Rows: (measure, mean, spread over prompts) for loops and extensions of the native model at 32x32."""
    seams, plain, forward, backward = [], [], [], []
    options = {"steps": args.steps, "progress": False}
    for k, prompt in enumerate(PROMPTS[:args.prompts]):
        seams.append(loop_seam(model.loop(prompt, seed=k, **options))["ratio"])
        plain.append(loop_seam(model.generate(prompt, seed=k, **options))["ratio"])
        clip = world.render(prompt, 9, 32, 32, seed=200 + k).video
        longer = model.extend(clip, prompt, new_frames=8, seed=k, **options)
        forward.append(continuity(clip, longer[9:], prompt))
        earlier = model.extend(clip, prompt, direction="backward", new_frames=8, seed=k, **options)
        backward.append(continuity(clip, earlier[:8], prompt))

    def row(label, values, fmt="{:.2f}"):
        values = [v for v in values if v is not None]
        if not values:
            return [label, "-", "-", "0"]
        return [label, fmt.format(np.mean(values)), f"{np.min(values):.2f} .. {np.max(values):.2f}", str(len(values))]

    rows = [row("loop: seam / mean step (model.loop)", seams),
            row("no loop: seam / mean step (model.generate)", plain),
            row("extend forward: velocity cosine", [c[0] if c else None for c in forward]),
            row("extend forward: speed ratio", [c[1] if c else None for c in forward]),
            row("extend backward: velocity cosine", [c[0] if c else None for c in backward]),
            row("extend backward: speed ratio", [c[1] if c else None for c in backward])]
    for r in rows:
        print(" | ".join(r))
    return rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae-steps", type=int, default=600, help="VAE training steps (shared by both models)")
    parser.add_argument("--dit-steps", type=int, default=1200, help="DiT training steps of each model")
    parser.add_argument("--items", type=int, default=4000, help="shapes-world items per native size")
    parser.add_argument("--cache", type=int, default=1024, help="videos whose latents each DiT trains on")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many of the 8 prompts to sample")
    parser.add_argument("--samples", type=int, default=3, help="seeds per prompt")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--seed", type=int, default=0, help="seed for data order, noise and initial weights")
    parser.add_argument("--smoke", action="store_true", help="a few steps of everything (checks the script)")
    parser.add_argument("--progress", action="store_true", help="show training progress bars")
    parser.add_argument("--write-results", action="store_true", help=f"append the tables to {RESULTS.name}")
    parser.add_argument("--save", default=None, help="also save both models here (SAVE/native, SAVE/square)")
    args = parser.parse_args()
    if args.smoke:
        args.vae_steps, args.dit_steps, args.items, args.cache = 2, 2, 32, 96
        args.prompts, args.samples, args.steps = 2, 1, 2
    started, cpu_started = time.time(), time.process_time()
    models, train_cpu = train_models(args)
    if args.save:
        for name, model in models.items():
            print(f"saved {model.save_pretrained(Path(args.save) / name)}")
    print("\nmodel | size | overall | presence | shape | direction | in frame | whole")
    aspect = aspect_table(models, args)
    print("\nmeasure | mean | range over prompts | prompts")
    prompting = prompting_table(models["native"], args)
    wall, cpu = time.time() - started, time.process_time() - cpu_started
    print(f"\n{wall:.0f} s wall, {cpu:.0f} s CPU ({train_cpu:.0f} s training), {torch.get_num_threads()} threads")
    if args.write_results:
        note = (f"`python benchmarks/native_aspect.py` (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}): "
                f"VAE {args.vae_steps} steps, each DiT {args.dit_steps} steps, {args.prompts} prompts x {args.samples} "
                f"seeds, {args.steps} sampling steps; {cpu:.0f} s CPU ({wall:.0f} s wall on a shared machine).")
        table = "\n".join([
            markdown(["model", "sampled at", "overall", "presence", "shape", "direction", "in frame", "whole"], aspect),
            "", "Prompting modes of the native model at 32x32 (minisora.prompting):", "",
            markdown(["measure", "mean", "range over prompts", "prompts"], prompting), ""])
        write_results("native aspect ratios vs square crops", "cpu", note, table)
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
