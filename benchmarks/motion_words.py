"""Does the model move an object the way the prompt says? One object, every motion word, the same seeds.

    python benchmarks/motion_words.py                                   # the shipped model, 6 seeds
    python benchmarks/motion_words.py --model runs/tiny-shapes/model --object "a small blue circle"
    python benchmarks/motion_words.py --quick                           # 2 seeds, 4 steps: to try the script

For each of the world's nine motions the script asks for the same object ("a large red square moves to the
left", "... moves up", ..., "... stays still") with seeds 0, 1, ... and measures the object's velocity
with the evaluator's own tracking (`evaluate.launch_velocity`: pixels per frame, x right, y down). The
world's videos of the same prompts and seeds go through the same measurement, as the reference.

Columns: the mean velocity over the seeds; `along`, its component in the asked direction (the world's
objects move 2-3 px/frame); `direction`, the evaluator's direction score. The last line is the test that
matters most: for one seed (one starting noise), how far apart the eight moving prompts' velocities are
(the mean distance from their centroid, averaged over seeds). A model that reads the motion word moves the
object differently for each word; a model that ignores it moves it the same way for every word, and this
spread is near 0 however the velocities look one by one.
`--write-results` appends the table to benchmarks/RESULTS.md with the machine's name and load.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from minisora import world
from minisora.evaluate import STILL_WORDS, launch_velocity, score

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is a folder of scripts
from common import RESULTS, load_note, load_saved_model, machine_name, write_results  # noqa: E402

CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "tiny-shapes"


def measure(videos: list[np.ndarray], prompt: str) -> dict:
    """Velocity and direction score of the one object of `prompt` in each video.

    -> {"velocities": (N, 2) with NaN where the object was never seen whole twice in a row,
        "direction": mean direction score over the videos where it applies (NaN if none)}
    """
    velocities = np.array([v if (v := launch_velocity(video, prompt)[0]) is not None else (np.nan, np.nan)
                           for video in videos])
    directions = [s["direction"] for video in videos if "direction" in (s := score(video, prompt))]
    return {"velocities": velocities, "direction": float(np.mean(directions)) if directions else float("nan")}


def spread(velocities: dict[str, np.ndarray]) -> float:
    """Mean over seeds of how far the moving motions' velocities of one seed lie from their centroid (px/frame).

    velocities: {motion: (seeds, 2)}; NaN rows (not measured) are left out of their seed.
    """
    moving = np.stack([v for motion, v in velocities.items() if motion != "still"])  # (motions, seeds, 2)
    per_seed = []
    for seed_rows in moving.transpose(1, 0, 2):  # (motions, 2) for one seed
        rows = seed_rows[~np.isnan(seed_rows).any(axis=1)]
        if len(rows) >= 2:
            per_seed.append(float(np.linalg.norm(rows - rows.mean(axis=0), axis=1).mean()))
    return float(np.mean(per_seed)) if per_seed else float("nan")


def motion_words(model, thing: str = "a large red square", seeds: int = 6, steps: int | None = None,
                 guidance: float | None = None) -> dict:
    """Generate and render `thing` with every motion word, `seeds` videos each, and measure them.

    -> {"rows": [{"motion", "prompt", "model": measure(...), "world": measure(...)}], "spread": {"model", "world"}}
    """
    scene = world.parse_caption(thing)
    if len(scene.objects) != 1 or scene.objects[0].motion != "still" or set(world.split_words(thing)) & STILL_WORDS:
        raise ValueError(f"describe one object without a motion, e.g. 'a large red square', got {thing!r}")
    t, h, w = model.config.data.num_frames, model.config.data.height, model.config.data.width
    rows = []
    for motion in world.MOTIONS:
        prompt = f"{thing} {world.motion_phrase(motion)}"
        made = [model.generate(prompt, seed=s, steps=steps, guidance=guidance, progress=False) for s in range(seeds)]
        real = [world.render(prompt, t, h, w, seed=s).video for s in range(seeds)]
        rows.append({"motion": motion, "prompt": prompt, "model": measure(made, prompt), "world": measure(real, prompt)})
    return {"rows": rows, "spread": {who: spread({r["motion"]: r[who]["velocities"] for r in rows})
                                     for who in ("model", "world")}}


def markdown(result: dict) -> str:
    """The result of `motion_words` as a markdown table and a line with the same-seed spread."""
    def cells(m: dict, asked: tuple[float, float]) -> list[str]:
        v = np.nanmean(m["velocities"], axis=0) if not np.isnan(m["velocities"]).all() else np.full(2, np.nan)
        return [f"({v[0]:+.1f}, {v[1]:+.1f})", f"{float(np.dot(v, asked)):+.1f}", f"{m['direction']:.2f}"]

    lines = ["| prompt | model velocity | model along | model direction | world velocity | world along | "
             "world direction |", "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        asked = world.MOTIONS[row["motion"]]
        lines.append("| " + " | ".join([row["prompt"], *cells(row["model"], asked), *cells(row["world"], asked)]) + " |")
    spread_ = result["spread"]
    return ("\n".join(lines) + f"\n\nSame seed, eight motion words: velocities {spread_['model']:.2f} px/frame apart "
            f"for the model, {spread_['world']:.2f} for the world (0 = the word changes nothing).\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(CHECKPOINT), help="a save_pretrained folder (default: the shipped one)")
    parser.add_argument("--object", default="a large red square", help="one object, without a motion")
    parser.add_argument("--seeds", type=int, default=None, help="videos per motion, seeds 0, 1, ... (default 6)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance (default: the model's)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 4 steps: to try the script")
    parser.add_argument("--write-results", action="store_true", help=f"append the table to {RESULTS.name}")
    args = parser.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (2 if args.quick else 6)
    steps = args.steps if args.steps is not None else (4 if args.quick else None)
    if seeds < 2:
        parser.error(f"--seeds must be 2 or more (the spread compares seeds), got {seeds}")
    model, sampling = load_saved_model(parser, args.model, args.device, steps)
    guidance = model.config.flow.guidance if args.guidance is None else args.guidance
    note = (f"{load_note()}; model {args.model}; '{args.object}', {seeds} seeds per motion; "
            f"{sampling}, guidance {guidance:g}")
    print(f"{machine_name(args.device)} · torch {torch.__version__} · {note}", flush=True)
    started = time.perf_counter()
    try:
        table = markdown(motion_words(model, args.object, seeds, steps, args.guidance))
    except ValueError as error:
        parser.error(f"--object: {error}")
    print()
    print(table)
    print(f"{len(world.MOTIONS) * seeds} videos in {time.perf_counter() - started:.0f} s")
    if args.write_results:
        write_results("motion words", args.device, note, table)
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
