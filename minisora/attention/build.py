"""Just-in-time build of the attention extension from the sources in csrc/, cached.

Two artefacts:
  * the operator library (binding.cpp + cpu/*.cpp), built with torch.utils.cpp_extension.load
    and ninja. It defines `torch.ops.minisora.attn_fwd/attn_bwd` and their CPU kernels, includes
    no CUDA header, and so builds against a CPU-only and a CUDA PyTorch alike.
  * the CUDA kernels (cuda/*.cu), torch-free, compiled by nvcc into a plain shared library with
    `extern "C"` launchers (cuda/launchers.h). Only built where PyTorch sees a GPU and nvcc exists.
    A .cu that included torch headers would take minutes per GPU architecture to compile; these
    take seconds. op.py calls the launchers through ctypes.

Both are cached in MINISORA_EXT_DIR (default: PyTorch's extension directory,
~/.cache/torch_extensions or TORCH_EXTENSIONS_DIR) under a folder named after the Python and
PyTorch versions, because a library built against one PyTorch must not be loaded by another.
MINISORA_CUDA_LIB points at a CUDA kernel library built elsewhere (a GPU machine without nvcc).
`python -m minisora build-ext [--verbose]` calls `build_extension()` to prebuild.
What the sources implement: FlashAttention (arXiv:2205.14135) and FlashAttention-2 (arXiv:2307.08691);
see csrc/README.md.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent / "csrc"
CPU_SOURCES = [CSRC / "binding.cpp", *sorted((CSRC / "cpu").glob("*.cpp"))]
CUDA_DIR = CSRC / "cuda"


class BuildError(RuntimeError):
    """The extension could not be built; the message names the cause."""


def build_root() -> Path:
    """Folder holding the cached builds for this Python + PyTorch."""
    from torch.utils.cpp_extension import get_default_build_root

    base = os.environ.get("MINISORA_EXT_DIR") or get_default_build_root()
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}_torch{torch.__version__}".replace("+", "_")
    return Path(base) / tag


def build_cpu_ops(verbose: bool = False) -> Path:
    """Build (or reuse) the operator library and return its path. Raises BuildError."""
    from torch.utils.cpp_extension import load, verify_ninja_availability

    try:
        verify_ninja_availability()
    except RuntimeError as err:
        raise BuildError("ninja is not installed (pip install ninja)") from err
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        raise BuildError(f"no C++ compiler found (looked for {os.environ.get('CXX', 'c++')!r})")
    folder = build_root() / "minisora_attn"
    folder.mkdir(parents=True, exist_ok=True)
    # at::parallel_for is a header template: without -fopenmp it silently runs on one thread.
    # On Linux the extension then shares PyTorch's libgomp (same soname, loaded once).
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    try:
        path = load(  # loads the library too; returns its path (ninja rebuilds it if sources changed)
            name="minisora_attn",
            sources=[str(s) for s in CPU_SOURCES],
            extra_cflags=["-O3", *openmp],
            extra_ldflags=openmp,
            build_directory=str(folder),
            is_python_module=False,  # a plain library: loading it runs TORCH_LIBRARY
            verbose=verbose,
        )
    except (RuntimeError, subprocess.CalledProcessError, OSError) as err:
        raise BuildError(f"compiling {CSRC} failed: {_last_lines(str(err))}") from err
    return Path(path)


def find_nvcc() -> str | None:
    """nvcc from CUDA_HOME/CUDA_PATH, PATH or /usr/local/cuda, or None."""
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc")
    found = shutil.which("nvcc")
    if found:
        return found
    return "/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None


def cuda_arch_flags() -> list[str]:
    """-gencode flags: TORCH_CUDA_ARCH_LIST (e.g. "7.5;8.0") if set, else the visible GPUs."""
    listed = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if listed:
        archs = {a.strip().split("+")[0].replace(".", "") for a in listed.replace(" ", ";").split(";") if a.strip()}
    elif torch.cuda.is_available():
        archs = {"%d%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
    else:
        raise BuildError("no GPU visible and TORCH_CUDA_ARCH_LIST unset: cannot choose CUDA architectures")
    return [f"-gencode=arch=compute_{a},code=sm_{a}" for a in sorted(archs)]


def build_cuda_kernels(verbose: bool = False) -> Path:
    """Compile cuda/*.cu with nvcc into a shared library (cached by content); return its path.

    MINISORA_CUDA_LIB=/path/to/lib.so uses a library built elsewhere instead (for machines
    without nvcc; build it with the nvcc command at the top of csrc/cuda/launchers.cu).
    """
    prebuilt = os.environ.get("MINISORA_CUDA_LIB")
    if prebuilt:
        if not Path(prebuilt).is_file():
            raise BuildError(f"MINISORA_CUDA_LIB={prebuilt} is not a file")
        return Path(prebuilt)
    nvcc = find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    sources = sorted(CUDA_DIR.glob("*.cu"))
    if not sources:
        raise BuildError(f"no CUDA sources in {CUDA_DIR}")
    # --threads 0: compile the architectures in parallel.
    flags = ["-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", "-lineinfo", "--threads", "0", *cuda_arch_flags()]
    # The cache key covers every byte that goes into the library: sources, headers, flags, nvcc.
    digest = hashlib.sha256(" ".join([nvcc, *flags]).encode())
    for path in sorted(CUDA_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    target = build_root() / "minisora_attn_cuda" / f"kernels_{digest.hexdigest()[:16]}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")  # rename at the end: never a half library
    cmd = [nvcc, *flags, "-o", str(partial), *map(str, sources)]
    if verbose:
        print(" ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"nvcc failed: {_last_lines(result.stderr or result.stdout)}")
    partial.replace(target)
    return target


def build_extension(verbose: bool = False) -> dict[str, Path | None]:
    """Build everything this machine can use; return {"cpu": path, "cuda": path or None}.

    The CUDA kernels are attempted only where torch.cuda.is_available(). Raises BuildError
    naming the cause when a build fails.
    """
    paths: dict[str, Path | None] = {"cpu": build_cpu_ops(verbose), "cuda": None}
    if torch.cuda.is_available():
        paths["cuda"] = build_cuda_kernels(verbose)
    return paths


def _last_lines(text: str, n: int = 12) -> str:
    # Compiler errors are long; the first error is usually near the end of what ninja prints.
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-n:])
