"""Quality grows with compute: one model trained for 1x, 4x, 16x the DiT steps, scored by the evaluator.

    python benchmarks/scaling.py                           # tiny preset, 1x/4x/16x of 50 DiT steps, CPU
    python benchmarks/scaling.py --quick                   # 1x/4x of 10 steps, 1 video per prompt
    python benchmarks/scaling.py --multipliers 0 1 4 16 --base-steps 100 --write-results
    python benchmarks/scaling.py --preset colab --device cuda --base-steps 1000 --vae-steps 4000

Every run starts from the same initial weights and the same trained VAE (the one in assets/tiny-shapes
when it is there and fits the preset, else one trained here for --vae-steps steps) and trains the DiT
and text encoder for multiplier x base_steps steps with the preset's batch size and its learning-rate
schedule stretched over the run, as `python -m minisora train --steps N` would. Each trained model
then generates `samples` videos for each prompt and `minisora.evaluate` scores them; a row holds
the mean of every metric, the training time and the training compute
(~6 x DiT+text parameters x tokens x samples seen, the forward and backward matmuls; attention
scores are left out, small at these sequence lengths).

Another script or notebook imports the function without the folder being a package:

    import importlib.util
    spec = importlib.util.spec_from_file_location("scaling", "../benchmarks/scaling.py")
    scaling = importlib.util.module_from_spec(spec); spec.loader.exec_module(scaling)
    rows = scaling.run_scaling((1, 4, 16), base_steps=50)
    print(scaling.markdown(rows)); scaling.plot_scaling(rows)

`--write-results` appends the table to benchmarks/RESULTS.md with the machine's name and load.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from minisora import MiniSora
from minisora.config import get_preset
from minisora.data import make_dataset
from minisora.evaluate import METRICS, evaluate_model, heldout_prompts
from minisora.train import train_dit, train_vae

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is a folder of scripts
from common import RESULTS, load_note, machine_name, write_results  # noqa: E402

PRETRAINED = Path(__file__).resolve().parent.parent / "assets" / "tiny-shapes"
# Captions of the world seed that training never uses (evaluate.heldout_prompts): the model is scored on
# prompts it has not seen, as the shipped checkpoint's model card is.
PROMPTS = heldout_prompts(16)
COLUMNS = ["compute", "DiT steps", "train TFLOP", "train s", "final loss", *METRICS, "overall", "metric mean"]


def trained_vae(preset: str, dataset, vae_dir, vae_steps: int | None, progress: bool) -> MiniSora:
    """A model whose VAE is trained: loaded from vae_dir (if it is a saved model of this preset) or trained now."""
    if vae_dir is not None and Path(vae_dir).is_dir():
        saved = MiniSora.from_pretrained(vae_dir)
        if saved.config.name == preset:
            return saved
        print(f"{vae_dir} holds a '{saved.config.name}' model, not '{preset}': training a VAE instead")
    torch.manual_seed(0)
    model = MiniSora.from_preset(preset)
    train_vae(model, dataset, steps=vae_steps, progress=progress)
    return model


def run_scaling(multipliers=(1, 4, 16), base_steps: int = 50, *, preset: str = "tiny", vae_dir=PRETRAINED,
                vae_steps: int | None = None, prompts=PROMPTS, samples: int = 4, seed: int = 0,
                latent_cache: int | None = None, device: str | None = None, progress: bool = True) -> list[dict]:
    """Train the DiT for m * base_steps steps for each m in `multipliers` and score each result.

    multipliers: compute multiples; 0 scores the untrained DiT (the floor). vae_dir: a saved model whose
    VAE (and config) every run shares; when it is missing, a VAE is trained for `vae_steps` steps (None =
    the preset's). latent_cache: videos whose latents the DiT trains on (None = the preset's; smaller
    starts faster). Returns one dict per multiplier: {"multiplier", "steps", "train_seconds", "tflop",
    "final_loss", "scores" (metric -> mean over len(prompts) * samples videos), "metric_mean" (the plain
    mean of the metrics: `overall` is a harmonic mean, 0 until every metric is above 0), "videos"}.

    Each run has its own cosine learning-rate schedule, so the 16x run is not the 1x run continued.
    train_seconds is the wall time of `train_dit`, including encoding the latent cache (the same cost
    in every run).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not multipliers or min(multipliers) < 0 or base_steps < 1:
        raise ValueError(f"need multipliers >= 0 and base_steps >= 1, got {multipliers} and {base_steps}")
    dataset = make_dataset(get_preset(preset).data, seed=seed, length=20_000)
    base = trained_vae(preset, dataset, vae_dir, vae_steps, progress)
    rows = []
    for multiplier in multipliers:
        torch.manual_seed(seed)  # every run starts from the same DiT and text encoder
        model = MiniSora(base.config, base.tokenizer)
        model.vae.load_state_dict(base.vae.state_dict())
        model.config.train.seed = seed
        if latent_cache is not None:
            model.config.train.latent_cache = latent_cache
        model.to(device)
        steps, seconds, final_loss = multiplier * base_steps, 0.0, float("nan")
        if steps:
            started = time.perf_counter()
            result = train_dit(model, dataset, steps=steps, progress=progress)
            seconds, final_loss = time.perf_counter() - started, result.final_loss
        cfg = model.config
        shape = model.latent_shape(cfg.data.num_frames, cfg.data.height, cfg.data.width)
        tokens = math.prod(s // p for s, p in zip(shape[1:], cfg.dit.patch_size))
        params = sum(p.numel() for part in (model.dit, model.text_encoder) for p in part.parameters())
        results = evaluate_model(model.eval(), list(prompts), samples=samples, seed=10_000 + seed, progress=False)
        metric_means = [results["mean"][name] for name in METRICS if name in results["mean"]]
        rows.append({"multiplier": multiplier, "steps": steps, "train_seconds": seconds,
                     "tflop": 6 * params * tokens * cfg.train.batch_size * steps / 1e12, "final_loss": final_loss,
                     "scores": results["mean"], "metric_mean": sum(metric_means) / max(len(metric_means), 1),
                     "videos": results["videos"]})
        if progress:
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows of `run_scaling` as a markdown table ("-" where a metric did not apply)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        scores = row["scores"]
        cells = [f"{row['multiplier']}x", row["steps"], f"{row['tflop']:.3g}", f"{row['train_seconds']:.0f}",
                 "-" if math.isnan(row["final_loss"]) else f"{row['final_loss']:.3f}"]
        cells += [f"{scores[name]:.2f}" if name in scores else "-" for name in (*METRICS, "overall")]
        cells.append(f"{row['metric_mean']:.2f}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def plot_scaling(rows: list[dict], metric: str = "overall"):
    """Evaluator score against training compute and against training time (two panels). Returns the figure.

    metric: "overall", one of evaluate.METRICS, or "mean" (the plain mean of the metrics).
    """
    import matplotlib.pyplot as plt

    def value(row):
        return row["metric_mean"] if metric == "mean" else row["scores"].get(metric, float("nan"))

    trained = [r for r in rows if r["steps"] > 0]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, key, label in ((axes[0], "tflop", "training compute (TFLOP)"),
                           (axes[1], "train_seconds", "training time (s)")):
        ax.plot([r[key] for r in trained], [value(r) for r in trained], "o-")
        for r in trained:
            ax.annotate(f"{r['multiplier']}x", (r[key], value(r)), textcoords="offset points", xytext=(4, -10))
        untrained = [r for r in rows if r["steps"] == 0]
        if untrained:
            ax.axhline(value(untrained[0]), color="grey", ls="--", label="untrained DiT")
            ax.legend(loc="lower right")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"evaluator score ({metric})")
    fig.suptitle("the same model at more training compute")
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "colab", "large"])
    parser.add_argument("--multipliers", type=int, nargs="+", default=None, help="default 1 4 16 (1 4 with --quick)")
    parser.add_argument("--base-steps", type=int, default=None, help="DiT steps of the 1x run (default 50, 10 quick)")
    parser.add_argument("--vae", default=str(PRETRAINED), help="saved model whose VAE every run uses")
    parser.add_argument("--vae-steps", type=int, default=None, help="if --vae is missing: VAE steps to train")
    parser.add_argument("--samples", type=int, default=None, help="videos per prompt (default 4, 1 quick)")
    parser.add_argument("--latent-cache", type=int, default=None, help="videos encoded for DiT training "
                                                                        "(default: the preset's; 256 quick)")
    parser.add_argument("--quick", action="store_true", help="two short runs, one video per prompt")
    parser.add_argument("--plot", default=None, help="also save the figure here (e.g. scaling.png)")
    parser.add_argument("--write-results", action="store_true", help=f"append the table to {RESULTS.name}")
    parser.add_argument("--note", default="", help="a line stored with the results")
    args = parser.parse_args()
    multipliers = args.multipliers or ([1, 4] if args.quick else [1, 4, 16])
    base_steps = args.base_steps or (10 if args.quick else 50)
    samples = args.samples or (1 if args.quick else 4)
    latent_cache = args.latent_cache or (256 if args.quick else None)
    started = time.perf_counter()
    rows = run_scaling(multipliers, base_steps, preset=args.preset, vae_dir=args.vae, vae_steps=args.vae_steps,
                       samples=samples, latent_cache=latent_cache, device=args.device)
    table = markdown(rows)
    vae_source = f"from {args.vae}" if Path(args.vae).is_dir() else f"trained here ({args.vae_steps or 'preset'} steps)"
    note = (f"{load_note()}; preset {args.preset}, VAE {vae_source}; {rows[0]['videos']} videos per row "
            f"({len(PROMPTS)} held-out prompts x {samples}); whole run {time.perf_counter() - started:.0f} s."
            + (f" {args.note}" if args.note else ""))
    print(f"\n{machine_name(args.device)} · torch {torch.__version__} · {note}\n")
    print(table)
    if args.plot:
        plot_scaling(rows).savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    if args.write_results:
        write_results("scaling", args.device, note, table)
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
