"""Checkpoints: training that survives being stopped, and resumes exactly where it stopped.

A checkpoint is a folder `step-0000200/` of safetensors files (model, optimizer state, EMA weights) plus
`state.json` (step, loss history, optimizer hyper-parameters); nothing is pickled. It is written under
a temporary name and renamed when complete (a rename is atomic), and only then recorded in `latest`,
so a crash mid-write leaves the previous checkpoint as the latest one.

    checkpointer = Checkpointer("runs/tiny/checkpoints/dit")
    checkpointer.save(step, {"model": ..., "optimizer": optimizer_to_tensors(opt)[0]}, state)
    tensors, state = checkpointer.load_latest()       # None when there is none yet

Exact resume needs more than weights: Adam's moments (`optimizer_to_tensors`), and data and noise that
depend on the step alone (minisora.batching, train.step_generator). `HoldInterrupt` holds Ctrl-C until
the current step ends, so the checkpoint written then has weights and optimizer state that agree.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Flatten an optimizer state_dict into safetensors-ready tensors + JSON-ready metadata."""
    state = optimizer.state_dict()
    tensors = {f"{index}.{name}": value.detach().cpu().contiguous()
               for index, slots in state["state"].items() for name, value in slots.items()}
    return tensors, {"param_groups": state["param_groups"]}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    """Restore what `optimizer_to_tensors` flattened (Adam's moments and step counts, per parameter)."""
    slots: dict[int, dict] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})


class Checkpointer:
    """Checkpoints as folders `step-0000200/` of safetensors + state.json, each written under a temporary
    name and renamed when complete (a rename is atomic), then recorded in the file `latest`."""

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        self.directory, self.keep = Path(directory), keep

    def save(self, step: int, tensors: dict[str, dict[str, torch.Tensor]], state: dict) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"step-{step:07d}"
        tmp = self.directory / f".tmp-step-{step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name, group in tensors.items():
            save_file(group, str(tmp / f"{name}.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        latest_tmp = self.directory / ".latest.tmp"
        latest_tmp.write_text(final.name)
        os.replace(latest_tmp, self.directory / "latest")
        for old in sorted(self.directory.glob("step-*"))[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load_latest(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict] | None:
        """(tensor groups, state) of the newest complete checkpoint, or None if there is none."""
        pointer = self.directory / "latest"
        if not pointer.exists():
            return None
        folder = self.directory / pointer.read_text().strip()
        try:
            state = json.loads((folder / "state.json").read_text())
            tensors = {p.stem: load_file(str(p)) for p in folder.glob("*.safetensors")}
        except Exception as err:  # a damaged checkpoint must say where it is, not crash deep inside
            raise ValueError(f"checkpoint '{folder}' cannot be read ({err}); delete it to start over") from err
        return tensors, state


class HoldInterrupt:
    """Hold Ctrl-C until the current training step ends, so weights and optimizer state always agree."""

    def __enter__(self):
        self.pressed = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._remember)
        return self

    def _remember(self, signum, frame):
        self.pressed = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False
