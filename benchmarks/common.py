"""What every benchmark records beside its table: the machine, its load, and where the rows go."""

import contextlib
import datetime
import os
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def machine_name(device: str) -> str:
    """GPU name, or the CPU model from /proc/cpuinfo with the number of threads torch uses."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {torch.get_num_threads()} threads"


def load_note() -> str:
    """The 1-minute load average against the core count: on a shared machine, times depend on it."""
    with contextlib.suppress(OSError, AttributeError):
        return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    return "load average unknown"


def write_results(title: str, device: str, note: str, table: str) -> None:
    """Append one section to benchmarks/RESULTS.md: a header naming the benchmark, the machine, torch and
    the date, then `note` and `table` (markdown). Every script writes its results through here; the file
    is opened at write time because other benchmarks append to it too."""
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by the scripts in benchmarks/ (`--write-results`).\n")
    stamp = datetime.date.today().isoformat()
    header = f"\n## {title} · {machine_name(device)} · torch {torch.__version__} · {stamp}\n\n"
    with RESULTS.open("a") as f:
        f.write(header + (f"{note}\n\n" if note else "") + table)


def load_saved_model(parser, folder: str, device: str, steps: int | None):
    """For scripts that sample a saved model: refuse a bad --steps or --model through `parser` (a message, not a
    traceback), load the model in eval mode, and describe its sampling settings for the results note.

    -> (model, "20 euler steps" style text; the caller adds the guidance it uses)
    """
    if steps is not None and steps < 1:
        parser.error(f"--steps must be 1 or more, got {steps}")
    if not (Path(folder) / "config.json").exists():
        parser.error(f"no saved model in {folder} (a folder written by save_pretrained)")
    from minisora import MiniSora

    model = MiniSora.from_pretrained(folder, device=torch.device(device)).eval()
    flow = model.config.flow
    return model, f"{steps or flow.steps} {flow.sampler} steps"
