"""Training throughput of each preset: samples/s, tokens/s and peak memory of a VAE step and a DiT step.

    python benchmarks/training.py                         # CPU: tiny and colab; GPU: all three presets
    python benchmarks/training.py --quick                 # tiny only, fewer steps
    python benchmarks/training.py --device cuda --presets large --write-results
    python benchmarks/training.py --presets colab --batch-size 4 --steps 3

A step is exactly what `train.fit` runs (forward, backward, gradient clipping, AdamW, EMA for the DiT,
bf16/fp16 autocast where the preset asks for it on a GPU), timed on a fixed batch of random data so that
only the model is measured: the VAE on videos of the preset's size at `train.vae_batch_size`, the DiT
on their latents at `train.batch_size` (as `train_dit` trains from its latent cache). The first step is a warm-up and is
not counted.

tokens: for the DiT, its sequence length (spacetime patches per video); for the VAE, the latent
positions T'·H'·W' it encodes per clip. Peak memory: on a GPU, torch.cuda.max_memory_allocated during
the steps; on a CPU, the peak resident set of the whole process (VmHWM, reset before each measurement
on Linux), so it includes the ~0.3 GB that PyTorch itself occupies.
`--write-results` appends the table to benchmarks/RESULTS.md with the machine's name and load.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import sys
import time
from pathlib import Path

import torch

from minisora import MiniSora
from minisora.train import FlowObjective, VAEObjective, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is a folder of scripts
from common import RESULTS, load_note, machine_name, write_results  # noqa: E402

COLUMNS = ["preset", "stage", "params", "batch", "clip T×H×W", "tokens/sample", "s/step", "samples/s",
           "tokens/s", "peak MiB"]
CPU_BATCH = {"colab": {"vae": 2, "dit": 4}}  # a CPU takes minutes per colab step at its GPU batch sizes


class PeakMemory:
    """Peak memory (MiB) of the code inside `with PeakMemory(device) as peak:`, read as `peak.mib`."""

    def __init__(self, device: torch.device):
        self.device, self.mib = device, float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:  # writing 5 to clear_refs resets the process's peak RSS (Linux >= 4.0)
            with contextlib.suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            with contextlib.suppress(OSError, AttributeError):
                status = Path("/proc/self/status").read_text()
                self.mib = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
        return False


def stage_inputs(model: MiniSora, stage: str, batch_size: int, device: torch.device):
    """(objective, batch, clip (T, H, W), tokens per sample) for one training stage on random data."""
    cfg, generator = model.config, torch.Generator().manual_seed(0)
    if stage == "vae":
        clip = (cfg.data.num_frames, cfg.data.height, cfg.data.width)
        video = torch.rand((batch_size, 3, *clip), generator=generator) * 2 - 1
        tokens = math.prod(model.vae.latent_shape(*clip)[1:])
        return VAEObjective(model.vae), {"video": video.to(device)}, clip, tokens
    clip = (cfg.data.num_frames, cfg.data.height, cfg.data.width)
    shape = model.latent_shape(*clip)
    prompts = ["a red circle moves to the right", "a large blue square moves up"] * batch_size
    ids, mask = model.tokenizer.encode(prompts[:batch_size], cfg.text.max_len)
    batch = {"z0": torch.randn((batch_size, *shape), generator=generator).to(device), "ids": ids.to(device),
             "mask": mask.to(device)}
    tokens = math.prod(s // p for s, p in zip(shape[1:], cfg.dit.patch_size))
    return FlowObjective(model.text_encoder, model.dit, cfg.flow, cfg.dit.patch_size), batch, clip, tokens


def time_stage(model: MiniSora, stage: str, batch_size: int, steps: int, device: torch.device) -> dict:
    """Run `steps` training steps through train.fit; time all but the first. Returns one table row."""
    objective, batch, clip, tokens = stage_inputs(model, stage, batch_size, device)
    stamps = []

    def make_batch(step: int, rank: int, world_size: int) -> dict:
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the previous step has really finished
        stamps.append(time.perf_counter())
        return batch

    with PeakMemory(device) as peak:
        fit(objective, make_batch, stage=stage, steps=steps, lr=1e-4, train_cfg=model.config.train, device=device,
            use_ema=stage == "dit", progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())
    seconds = (stamps[-1] - stamps[1]) / (len(stamps) - 2)  # stamps[0] -> stamps[1] is the warm-up step
    params = sum(p.numel() for p in objective.parameters())
    return {"preset": model.config.name, "stage": stage, "params": f"{params / 1e6:.2f}M", "batch": batch_size,
            "clip T×H×W": "×".join(map(str, clip)), "tokens/sample": tokens, "s/step": f"{seconds:.3g}",
            "samples/s": f"{batch_size / seconds:.3g}", "tokens/s": f"{batch_size * tokens / seconds:.3g}",
            "peak MiB": f"{peak.mib:.0f}"}


def run(presets: list[str], device: torch.device, steps: int, batch_size: int | None) -> list[dict]:
    rows = []
    for name in presets:
        torch.manual_seed(0)
        model = MiniSora.from_preset(name)
        train = model.config.train
        for stage in ("vae", "dit"):
            preset_batch = train.vae_batch_size if stage == "vae" else train.batch_size
            on_cpu = CPU_BATCH.get(name, {}).get(stage) if device.type == "cpu" else None
            rows.append(time_stage(model, stage, batch_size or on_cpu or preset_batch, steps, device))
            print(" | ".join(str(rows[-1][c]) for c in COLUMNS), flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
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
    parser.add_argument("--steps", type=int, default=None, help="steps per stage, the first one untimed "
                                                                 "(default 6, or 3 with --quick)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"default: the preset's on a GPU; on a CPU the preset's except {CPU_BATCH}")
    parser.add_argument("--quick", action="store_true", help="tiny preset only (CPU), fewer steps")
    parser.add_argument("--write-results", action="store_true", help=f"append the table to {RESULTS.name}")
    parser.add_argument("--note", default="", help="a line stored with the results")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.presets:
        presets = args.presets
    elif device.type == "cuda":
        presets = ["tiny", "colab"] if args.quick else ["tiny", "colab", "large"]
    else:
        presets = ["tiny"] if args.quick else ["tiny", "colab"]
    steps = args.steps or (3 if args.quick else 6)
    if steps < 2:
        parser.error("--steps must be at least 2: the first step is a warm-up and is not timed")
    note = f"{load_note()}; {steps - 1} timed steps after one warm-up step." + (f" {args.note}" if args.note else "")
    print(f"{machine_name(args.device)} · torch {torch.__version__} · {note}")
    print(" | ".join(COLUMNS))
    rows = run(presets, device, steps, args.batch_size)
    table = markdown(rows)
    print()
    print(table)
    if args.write_results:
        write_results("training throughput", args.device, note, table)
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
