"""Sampling time per video against the number of steps, Euler against Heun, for each preset.

    python benchmarks/sampling.py                          # CPU: tiny and colab; GPU: all three presets
    python benchmarks/sampling.py --quick                  # tiny only, 5 and 20 steps
    python benchmarks/sampling.py --model assets/tiny-shapes --write-results
    python benchmarks/sampling.py --device cuda --presets large --write-results

One row per (preset, sampler, steps): seconds per video for `MiniSora.generate` (prompt encoding, the
sampler, VAE decoding) at the preset's video size and default guidance, and the number of model
evaluations (NFE: Euler 1 per step, Heun 2). With guidance other than 1 each evaluation runs the DiT
on a batch of 2 (with and without the prompt). Speed does not depend on the weights, so untrained
models of each preset are timed unless --model names a saved one. The first video of each preset is
a warm-up and is not counted; each time is the median of --repeats videos.
`--write-results` appends the table to benchmarks/RESULTS.md with the machine's name and load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from minisora import MiniSora

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is a folder of scripts
from common import RESULTS, load_note, machine_name, write_results  # noqa: E402

COLUMNS = ["preset", "video T×H×W", "sampler", "steps", "NFE", "s/video", "ms/NFE"]
PROMPT = "a red circle moves to the right"


def seconds_per_video(model: MiniSora, steps: int, sampler: str, repeats: int) -> float:
    """Median wall time of `repeats` calls of generate (synchronised on a GPU)."""
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        model.generate(PROMPT, steps=steps, sampler=sampler, seed=seed, progress=False)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(models: list[MiniSora], step_counts: list[int], samplers: list[str], repeats: int) -> list[dict]:
    rows = []
    for model in models:
        data = model.config.data
        seconds_per_video(model, 2, "euler", 1)  # warm-up: allocator, kernels, the attention extension
        for sampler in samplers:
            for steps in step_counts:
                seconds = seconds_per_video(model, steps, sampler, repeats)
                nfe = steps * (2 if sampler == "heun" else 1)
                rows.append({"preset": model.config.name, "video T×H×W": f"{data.num_frames}×{data.height}×{data.width}",
                             "sampler": sampler, "steps": steps, "NFE": nfe, "s/video": f"{seconds:.3g}",
                             "ms/NFE": f"{1e3 * seconds / nfe:.3g}"})
                print(" | ".join(str(rows[-1][c]) for c in COLUMNS), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", nargs="+", choices=["tiny", "colab", "large"], default=None,
                        help="default: tiny and colab on a CPU (tiny only with --quick), all on a GPU")
    parser.add_argument("--model", default=None, help="time this saved model (save_pretrained folder) instead")
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="step counts (default 5 10 20 50)")
    parser.add_argument("--samplers", nargs="+", choices=["euler", "heun"], default=["euler", "heun"])
    parser.add_argument("--repeats", type=int, default=None, help="videos per row, median taken (default 3, 1 quick)")
    parser.add_argument("--quick", action="store_true", help="tiny only, 5 and 20 steps, one video per row")
    parser.add_argument("--write-results", action="store_true", help=f"append the table to {RESULTS.name}")
    parser.add_argument("--note", default="", help="a line stored with the results")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.model:
        models = [MiniSora.from_pretrained(args.model, device=device)]
    else:
        cuda = device.type == "cuda"
        presets = args.presets or (["tiny"] if args.quick else ["tiny", "colab"] + (["large"] if cuda else []))
        models = []
        for name in presets:
            torch.manual_seed(0)
            models.append(MiniSora.from_preset(name).to(device).eval())
    step_counts = args.steps or ([5, 20] if args.quick else [5, 10, 20, 50])
    repeats = args.repeats or (1 if args.quick else 3)
    weights = f"weights of {args.model}" if args.model else "untrained weights"
    guidance = models[0].config.flow.guidance
    passes = "1 DiT pass" if guidance in (0, 1) else "the DiT on a batch of 2"
    note = (f"{load_note()}; {weights}, guidance {guidance:g} ({passes} per NFE), median of {repeats} "
            f"video(s) per row." + (f" {args.note}" if args.note else ""))
    print(f"{machine_name(args.device)} · torch {torch.__version__} · {note}")
    print(" | ".join(COLUMNS))
    rows = run(models, step_counts, args.samplers, repeats)
    table = markdown(rows)
    print()
    print(table)
    if args.write_results:
        write_results("sampling time", args.device, note, table)
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
