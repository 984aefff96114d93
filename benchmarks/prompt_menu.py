"""Which prompts does a model draw? Score a menu of candidate prompts, several seeds each, and rank them.

    python benchmarks/prompt_menu.py                                   # the shipped model, 12 prompts x 4 seeds
    python benchmarks/prompt_menu.py --model runs/tiny-shapes/model --seeds 8
    python benchmarks/prompt_menu.py --prompts "a red circle moves up" "a blue square stays still"
    python benchmarks/prompt_menu.py --quick                           # 3 prompts, 1 seed, 4 steps

Default prompts in the lessons and the studio should be prompts the model really draws. This script
generates `--seeds` videos (seeds 0, 1, ...) of each candidate prompt with the model's default sampling
settings (steps, guidance, sampler, video size; `--steps`/`--guidance` override them), scores each video
with the project's evaluator (`minisora.evaluate.evaluate_model`, as `python -m minisora eval` does) and
prints one row per prompt, best mean `overall` first, with the per-metric means ("-" = not scored).

Two extra columns keep a high score honest. `worst`: the lowest `overall` over the seeds. `measured`:
the share of videos in which the evaluator could measure everything the prompt asks for (the shape when
it names one, the direction when it names a motion). A metric with nothing to measure is left out of
`overall`, so a prompt whose object is never seen whole, or never seen moving, can score well on
presence and permanence alone: prefer prompts with `measured` near 1. The default menu: a dozen plain
one-object prompts over the colours, sizes, shapes and motions, still ones included. When the model is
retrained, run this again and update the lessons' default prompts.
`--write-results` appends the table to benchmarks/RESULTS.md with the machine's name and load.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from minisora import world
from minisora.evaluate import METRICS, STILL_WORDS, evaluate_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is a folder of scripts
from common import RESULTS, load_note, load_saved_model, machine_name, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "assets" / "tiny-shapes"
PROMPTS = [  # one object each: six colours, four shapes, three sizes; straight, diagonal and still motions
    "a cyan square moves to the left",
    "a yellow diamond moves down",
    "a purple circle moves down",
    "a red circle moves to the right",
    "a large blue square moves up",
    "a small green triangle moves to the left",
    "a blue diamond moves to the right",
    "a green circle moves up",
    "a blue circle moves down and to the left",
    "a green circle stays still",
    "a blue circle stays still",
    "a red square, small, not moving",
]
QUICK_PROMPTS = [PROMPTS[0], PROMPTS[3], PROMPTS[9]]


def asked_metrics(prompt: str) -> set[str]:
    """The metrics a prompt asks for beyond presence: "shape" if it names a shape, "direction" if a motion
    (the evaluator's own rule in `evaluate.score`: a still object's direction is scored when a word says so)."""
    words = set(world.split_words(prompt))
    asked = {"shape"} if words & set(world.SHAPES) else set()
    scene = world.parse_caption(prompt)
    if any(o.motion != "still" for o in scene.objects) or words & STILL_WORDS:
        asked.add("direction")
    return asked


def prompt_menu(model, prompts: list[str], seeds: int = 4, seed: int = 0, steps: int | None = None,
                guidance: float | None = None) -> list[dict]:
    """Score `seeds` videos of each prompt; one row per prompt, best mean overall first.

    A row: {"prompt", "mean": {metric: mean over the videos where it applies}, "worst": lowest overall,
    "measured": share of videos where every asked metric (asked_metrics) was scored, "videos": seeds}.
    """
    results = evaluate_model(model, prompts, samples=seeds, seed=seed, steps=steps, guidance=guidance,
                             progress=False)
    rows = []
    for row in results["prompts"]:
        asked = asked_metrics(row["prompt"])
        rows.append({"prompt": row["prompt"], "mean": row["mean"], "videos": len(row["samples"]),
                     "worst": min(s["overall"] for s in row["samples"]),
                     "measured": sum(asked <= set(s) for s in row["samples"]) / len(row["samples"])})
    return sorted(rows, key=lambda r: (-r["mean"]["overall"], -r["measured"], r["prompt"]))


def markdown(rows: list[dict]) -> str:
    """Rows of `prompt_menu` as a markdown table: the metrics scored in any row ("-" where not in this one)."""
    scored = [name for name in METRICS if any(name in row["mean"] for row in rows)]  # e.g. no collision
    columns = ["prompt", "overall", "worst", "measured", *scored]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row["prompt"], f"{row['mean']['overall']:.2f}", f"{row['worst']:.2f}", f"{row['measured']:.2f}"]
        cells += [f"{row['mean'][name]:.2f}" if name in row["mean"] else "-" for name in scored]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(CHECKPOINT), help="a save_pretrained folder (default: the shipped one)")
    parser.add_argument("--prompts", nargs="+", default=None, help="candidate prompts (default: a dozen)")
    parser.add_argument("--prompts-file", default=None, help="candidate prompts, one a line")
    parser.add_argument("--seeds", type=int, default=None, help="videos per prompt, seeds 0, 1, ... (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance (default: the model's)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="3 prompts, 1 seed, 4 steps: to try the script")
    parser.add_argument("--write-results", action="store_true", help=f"append the table to {RESULTS.name}")
    args = parser.parse_args(argv)
    if args.prompts_file:
        if not Path(args.prompts_file).is_file():
            parser.error(f"--prompts-file {args.prompts_file}: no such file")
        prompts = [line.strip() for line in Path(args.prompts_file).read_text().splitlines() if line.strip()]
    else:
        prompts = args.prompts or (QUICK_PROMPTS if args.quick else PROMPTS)
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 4)
    steps = args.steps if args.steps is not None else (4 if args.quick else None)
    if seeds < 1 or not prompts:
        parser.error("give at least one prompt and --seeds 1 or more")
    model, sampling = load_saved_model(parser, args.model, args.device, steps)
    guidance = model.config.flow.guidance if args.guidance is None else args.guidance
    note = (f"{load_note()}; model {args.model}; {seeds} seed(s) per prompt from seed {args.seed}; "
            f"{sampling}, guidance {guidance:g}")
    print(f"{machine_name(args.device)} · torch {torch.__version__} · {note}", flush=True)
    started = time.perf_counter()
    rows = prompt_menu(model, prompts, seeds, args.seed, steps, args.guidance)
    table = markdown(rows)
    print()
    print(table)
    print(f"{len(prompts) * seeds} videos in {time.perf_counter() - started:.0f} s")
    if args.write_results:
        write_results("prompt menu", args.device, note, table)
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
