"""Evaluator score against training minutes: how fast does the tiny recipe learn to draw what it is told?

    python benchmarks/quality_curve.py --run runs/tiny-shapes          # the curve a finished run recorded
    python benchmarks/quality_curve.py --train --dit-steps 3000 --eval-every 250 --out runs/curve
    python benchmarks/quality_curve.py --quick                         # a few short steps, to try it

`train_dit` scores `train.eval_prompts` held-out prompts (captions of a world seed that training never
uses, `evaluate.heldout_prompts`) with the EMA weights every `train.eval_every` steps, and appends each
result to OUT/checkpoints/dit/evals.jsonl with the step and the training minutes so far (evaluation time
left out). This script prints those rows as a table, and with --train first trains the preset: the VAE
(or the one in --vae) and then the DiT. `--plot curve.png` saves the figure that notebook 06 shows.
`--write-results` appends the table to benchmarks/RESULTS.md with the machine's name and load.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from minisora import MiniSora
from minisora.data import make_dataset
from minisora.evaluate import METRICS
from minisora.train import train_dit, train_vae

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is a folder of scripts
from common import load_note, write_results  # noqa: E402


def read_curve(run: str | Path) -> list[dict]:
    """The evaluations a run recorded: run/checkpoints/dit/evals.jsonl, or an evals.jsonl given directly."""
    path = Path(run)
    path = path if path.suffix == ".jsonl" else path / "checkpoints" / "dit" / "evals.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no {path}: train with `python -m minisora train --out RUN` (eval_every > 0)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} holds no evaluations yet: the run has not reached train.eval_every steps")
    return rows


def markdown(rows: list[dict]) -> str:
    """Rows of `read_curve` as a markdown table ("-" where a metric did not apply)."""
    columns = ["step", "minutes", *METRICS, "overall"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [str(row["step"]), f"{row['minutes']:.1f}"]
        cells += [f"{row[name]:.2f}" if name in row else "-" for name in (*METRICS, "overall")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curve(rows: list[dict], metrics=("overall", "presence", "direction", "shape"), ax=None):
    """Score against training minutes, one line per metric. Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    minutes = [row["minutes"] for row in rows]
    for name in metrics:
        ax.plot(minutes, [row.get(name, float("nan")) for row in rows], "o-" if name == "overall" else "--",
                label=name, lw=2 if name == "overall" else 1)
    ax.set(xlabel="DiT training minutes (CPU)", ylabel="evaluator score", ylim=(0, 1),
           title="held-out prompts, scored while training")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return ax


def train_curve(out: str, vae: str | None, vae_steps: int | None, dit_steps: int, eval_every: int,
                eval_prompts: int, preset: str = "tiny", quick: bool = False) -> list[dict]:
    """Train the preset's VAE (unless `vae` names a saved model) and DiT, scoring as it goes; return the curve."""
    if vae is not None:
        model = MiniSora.from_pretrained(vae)
    else:
        torch.manual_seed(0)
        model = MiniSora.from_preset(preset)
    cfg = model.config.train
    cfg.eval_every, cfg.eval_prompts = eval_every, eval_prompts
    if quick:
        cfg.latent_cache, cfg.batch_size, cfg.vae_batch_size = 64, 8, 4
    dataset = make_dataset(model.config.data, seed=cfg.seed, length=20_000)
    if vae is None:
        train_vae(model, dataset, steps=vae_steps or cfg.vae_steps, out_dir=out)
    train_dit(model, dataset, steps=dit_steps, out_dir=out)
    return read_curve(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default=None, help="a run folder (or evals.jsonl) to read instead of training")
    parser.add_argument("--train", action="store_true", help="train the tiny preset now and record its curve")
    parser.add_argument("--out", default="runs/curve", help="with --train: the run folder")
    parser.add_argument("--vae", default=None, help="with --train: a saved model whose VAE to keep")
    parser.add_argument("--vae-steps", type=int, default=None, help="with --train: VAE steps (default: preset's)")
    parser.add_argument("--dit-steps", type=int, default=3000, help="with --train: DiT steps")
    parser.add_argument("--eval-every", type=int, default=250, help="with --train: steps between evaluations")
    parser.add_argument("--eval-prompts", type=int, default=8, help="with --train: held-out prompts per check")
    parser.add_argument("--quick", action="store_true", help="train 20+30 steps, scoring every 10")
    parser.add_argument("--plot", default=None, help="also save the figure here (e.g. curve.png)")
    parser.add_argument("--write-results", action="store_true", help="append the table to RESULTS.md")
    args = parser.parse_args()
    if args.quick:
        rows = train_curve(args.out, None, 20, 30, 10, 2, quick=True)
    elif args.train:
        rows = train_curve(args.out, args.vae, args.vae_steps, args.dit_steps, args.eval_every, args.eval_prompts)
    elif args.run:
        try:
            rows = read_curve(args.run)
        except (FileNotFoundError, ValueError) as err:
            sys.exit(f"error: {err}")
    else:
        parser.error("give --run RUN, --train or --quick")
    table = markdown(rows)
    print(table)
    if args.plot:
        plot_curve(rows).figure.savefig(args.plot, dpi=120, bbox_inches="tight")
        print(f"wrote {args.plot}")
    if args.write_results:
        source = args.run or args.out
        write_results("quality curve", "cuda" if torch.cuda.is_available() else "cpu",
                      f"{load_note()}; run {source}; held-out prompts, one video each, EMA weights", table)


if __name__ == "__main__":
    main()
