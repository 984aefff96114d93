"""Attention benchmark: minisora's kernels against PyTorch SDPA and the naive reference.

    python benchmarks/attention.py                        # the GPU if there is one, else the CPU
    python benchmarks/attention.py --device cpu --write-results
    python benchmarks/attention.py --quick                # a few sizes only; on a GPU: <= 3 min, appends
                                                          # its rows to RESULTS.md (run it first on a GPU)

Rows: one per (dtype, N, d, implementation) with forward and forward+backward time, TFLOP/s and,
on a GPU, the peak memory the call allocated beyond its inputs.
FLOPs: the forward is two matmuls, 2 * 2*B*H*N*N*d = 4*B*H*N^2*d; the backward is five (recompute
S, dV, dP, dQ, dK), so forward+backward counts 3.5x the forward.
On a GPU every CUDA stage is timed (0 naive, 1 online softmax, 2 FA2 on tensor cores, 3 swizzled
+ ldmatrix; csrc/cuda/launchers.h), with the one backward kernel for fwd+bwd, plus each SDPA backend
PyTorch offers for the inputs. On a CPU: our C++ op against SDPA on the CPU, timed in alternating
rounds (medians), so that the load of a shared machine affects both alike.
`--write-results` appends the table to benchmarks/RESULTS.md under the machine's name.

`--quick` on a GPU is the one command to run whenever a GPU is at hand: it first runs the op's
device self-check (forward and backward against SDPA on the tests' odd shapes, every dtype and head
dim; selection.py) and prints its verdict, then times fp16/bf16, d = 64/128, N = 1k/4k/16k: our op
(best stage; atomic and deterministic backward) against SDPA's flash and memory-efficient backends
separately, forward and forward+backward, with peak memory, and appends the rows to RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from minisora.attention import naive_attention, op, selection

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, load_note, machine_name, write_results  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def columns(device: str) -> list[str]:
    unit = "TFLOP/s" if device == "cuda" else "GFLOP/s"  # CPU numbers are ~1000x smaller
    return ["dtype", "B", "H", "N", "d", "implementation", "fwd ms", f"fwd {unit}", "fwd+bwd ms",
            f"fwd+bwd {unit}", "peak MiB"]


def timed(fn, device: str, min_seconds: float = 0.2, max_reps: int = 100):
    """(milliseconds per call, peak MiB allocated beyond what existed before) for fn()."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn()  # warm-up: allocator, library loading; also raises if the inputs are unsupported
    sync()
    start = time.perf_counter()
    fn()
    sync()
    reps = max(1, min(max_reps, int(min_seconds / max(time.perf_counter() - start, 1e-6))))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    for _ in range(reps):  # queued back to back: launch latency overlaps with the kernels
        fn()
    sync()
    ms = 1e3 * (time.perf_counter() - start) / reps
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else None
    return ms, peak


def autograd_pair(forward, q, k, v):
    """(forward-only callable, forward+backward callable) for a differentiable forward(q, k, v)."""
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
    dout = torch.randn_like(q)

    def fwd():
        with torch.no_grad():
            forward(q, k, v)

    def fwd_bwd():
        torch.autograd.grad(forward(qg, kg, vg), (qg, kg, vg), dout)

    return fwd, fwd_bwd


def implementations(q, k, v, device: str, quick: bool = False):
    """Yield (name, forward callable, forward+backward callable) for everything worth timing."""
    scale = q.shape[-1] ** -0.5
    if device == "cuda":
        lib = op._state["cuda_lib"]
        if lib is not None:
            dout = torch.randn_like(q)
            code = op.CUDA_DTYPES[q.dtype]
            stages = [-1] if quick else range(4)
            for stage in stages:
                if stage >= 0 and lib.minisora_attn_fwd_stage(code, stage, q.shape[-1]) != stage:
                    continue  # e.g. tensor-core stages for fp32, bf16 before sm_80
                for deterministic in (False, True) if stage == -1 else (False,):

                    def fwd(stage=stage):
                        return op.cuda_attn_fwd(q, k, v, scale, stage=stage)

                    def fwd_bwd(fwd=fwd, deterministic=deterministic):
                        out, lse = fwd()
                        op.cuda_attn_bwd(dout, q, k, v, out, lse, scale, deterministic=deterministic)

                    name = "minisora" if stage == -1 else f"minisora stage {stage}"
                    yield name + (" (deterministic bwd)" if deterministic else ""), fwd, fwd_bwd
        names = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION") if quick else (
            "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")
        backends = [getattr(SDPBackend, n) for n in names if hasattr(SDPBackend, n)]  # cuDNN: torch >= 2.5
    else:
        if op.load():
            yield ("minisora C++",
                   *autograd_pair(lambda a, b, c: torch.ops.minisora.attn_fwd(a, b, c, scale)[0], q, k, v))
        backends = [None]  # SDPA's own choice on the CPU
    for backend in backends:
        name = "sdpa" if backend is None else f"sdpa {backend.name.lower()}"
        ctx = contextlib.nullcontext if backend is None else (lambda b=backend: sdpa_kernel(b))

        def sdpa(a, b, c, ctx=ctx):
            with ctx():
                return F.scaled_dot_product_attention(a, b, c, scale=scale)

        yield (name, *autograd_pair(sdpa, q, k, v))
    if not (quick and device == "cuda"):
        yield "naive reference", *autograd_pair(lambda a, b, c: naive_attention(a, b, c, scale)[0], q, k, v)


def sizes(device: str, quick: bool, dtypes: list[str]):
    """(dtype name, B, H, N, d). GPU: B*N = 16384 tokens and H*d = 2048, as in the FlashAttention papers."""
    if device == "cpu":
        cases = [(1, 4, 256, 64), (1, 4, 1024, 64), (1, 4, 2048, 64), (2, 4, 512, 32)]
        return [("fp32", *c) for c in (cases[:2] if quick else cases)]
    ns = [1024, 4096, 16384] if quick else [256, 512, 1024, 2048, 4096, 8192, 16384]
    if quick:
        dtypes = [t for t in dtypes if t != "fp32"]
    return [(t, max(1, 16384 // n), 2048 // d, n, d) for t in dtypes for d in (64, 128) for n in ns]


def timed_interleaved(fns, rounds: int = 7) -> list[float]:
    """CPU: median milliseconds of each callable, timed in alternating rounds (A B C A B C ...), so a
    load change on a shared machine hits every implementation alike and the ratios stay meaningful."""
    for fn in fns:
        fn()  # warm-up
    samples = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            samples[i].append(1e3 * (time.perf_counter() - start))
    return [sorted(x)[len(x) // 2] for x in samples]


def run_cpu(quick: bool) -> list[list[str]]:
    """CPU rows: every implementation timed side by side, forward then forward+backward."""
    rows = []
    for dtype_name, b, h, n, d in sizes("cpu", quick, []):
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(b, h, n, d, dtype=DTYPES[dtype_name], generator=g) for _ in range(3))
        flops = 4 * b * h * n * n * d
        impls = list(implementations(q, k, v, "cpu", quick))
        fwd_ms = timed_interleaved([fwd for _, fwd, _ in impls])
        bwd_ms = timed_interleaved([fb for _, _, fb in impls])
        for (name, _, _), f_ms, b_ms in zip(impls, fwd_ms, bwd_ms):
            cells = [f"{f_ms:.3g}", f"{flops / f_ms / 1e6:.3g}", f"{b_ms:.3g}", f"{3.5 * flops / b_ms / 1e6:.3g}", "-"]
            rows.append([str(c) for c in (dtype_name, b, h, n, d, name, *cells)])
            print(" | ".join(rows[-1]), flush=True)
    return rows


def run(device: str, quick: bool, dtypes: list[str]) -> list[list[str]]:
    if device == "cpu":
        return run_cpu(quick)
    rows = []
    free = torch.cuda.mem_get_info()[0] if device == "cuda" else None
    per_second = 1e9 if device == "cuda" else 1e6  # FLOP per ms -> TFLOP/s or GFLOP/s
    for dtype_name, b, h, n, d in sizes(device, quick, dtypes):
        g = torch.Generator(device=device).manual_seed(0)
        q, k, v = (torch.randn(b, h, n, d, device=device, dtype=DTYPES[dtype_name], generator=g) for _ in range(3))
        flops = 4 * b * h * n * n * d
        for name, fwd, fwd_bwd in implementations(q, k, v, device, quick):
            # The naive version keeps several (B, H, N, N) float32 tensors for its backward.
            if name == "naive reference" and free is not None and 5 * 4 * b * h * n * n > 0.8 * free:
                rows.append([str(c) for c in (dtype_name, b, h, n, d, name)] + ["skipped (memory)"] + [""] * 4)
                continue
            cells, peak = [], None
            for fn, work in ((fwd, flops), (fwd_bwd, 3.5 * flops)):
                try:
                    ms, peak = timed(fn, device, min_seconds=0.1 if quick else 0.2)
                    cells += [f"{ms:.3g}", f"{work / ms / per_second:.3g}"]
                except (RuntimeError, torch.OutOfMemoryError) as err:  # e.g. an SDPA backend refusing
                    cells += [f"unavailable: {str(err).splitlines()[0][:50]}", ""]
                    peak = None
            cells.append("-" if peak is None else f"{peak:.0f}")
            if device == "cuda":
                torch.cuda.empty_cache()
            row = [dtype_name, b, h, n, d, name] + cells
            rows.append([str(c) for c in row])
            print(" | ".join(rows[-1]), flush=True)
    return rows


def markdown(rows, device: str) -> str:
    names = columns(device)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def self_check_line(device: str) -> str:
    """The op's device self-check (selection.py) as one line for the results."""
    if not op.load() or not op.device_supported(device):
        return f"minisora op unavailable on {device}: {op.unavailable_reason() or op._state['cuda_reason']}"
    dev = torch.device(device)
    dtypes, head_dims = selection._check_plan(dev)
    start = time.perf_counter()
    failure = selection.self_check_failure(dev, dtypes, head_dims)
    took = time.perf_counter() - start
    what = f"{[str(t).replace('torch.', '') for t in dtypes]} x d={list(head_dims)}"
    return f"self-check {what}: " + ("passed" if failure is None else f"FAILED: {failure}") + f" ({took:.1f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="only a few sizes")
    parser.add_argument("--dtype", choices=list(DTYPES), action="append", help="GPU dtypes (default: all)")
    parser.add_argument("--write-results", action="store_true", help=f"append the table to {RESULTS.name}")
    parser.add_argument("--note", default="", help="a line stored with the results (e.g. the machine was busy)")
    args = parser.parse_args()
    if not op.load():
        print(f"minisora op unavailable ({op.unavailable_reason()}): timing the other implementations only")
    print(f"{machine_name(args.device)} · torch {torch.__version__}")
    check = self_check_line(args.device) if args.device == "cuda" else ""
    if check:
        print(check, flush=True)
    print(" | ".join(columns(args.device)))
    rows = run(args.device, args.quick, args.dtype or list(DTYPES))
    print()
    print(markdown(rows, args.device))
    if args.write_results or (args.quick and args.device == "cuda"):
        flops = ("Forward FLOPs = 4·B·H·N²·d, forward+backward = 3.5× that. Peak memory is what one "
                 "forward+backward allocated beyond its inputs (GPU only).")
        note = "; ".join(x for x in (args.note, load_note(), check, flops) if x)
        write_results("attention" + (" --quick" if args.quick else ""), args.device, note, markdown(rows, args.device))
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
