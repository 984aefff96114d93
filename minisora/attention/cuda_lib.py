"""The C interface of the CUDA kernels (csrc/cuda/launchers.h) as ctypes declarations, defined once.

op.py binds the nvcc-built library with `load(path)`; tests/test_cuda_kernels.py binds the same
launchers compiled against the host emulator with `declare(lib)`. Keep this file and launchers.h in
step: a wrong argtypes list would pass garbage to the kernels without any error.
(The kernels: FlashAttention, arXiv:2205.14135; FlashAttention-2, arXiv:2307.08691; csrc/README.md.)
"""

from __future__ import annotations

import ctypes

# enum minisora_dtype
F32, F16, BF16 = 0, 1, 2
# enum minisora_error
OK = 0
ERR_DTYPE, ERR_STAGE, ERR_HEAD_DIM, ERR_ARCH, ERR_SHAPE, ERR_ALIGNMENT, ERR_WORKSPACE, ERR_NULL = range(-1, -9, -1)
HEAD_DIMS = (32, 64, 128)

_p, _i, _f, _size = ctypes.c_void_p, ctypes.c_int, ctypes.c_float, ctypes.c_size_t
SIGNATURES = {
    # name: (argtypes, restype)
    "minisora_attn_fwd": ([_i, _i, _p, _p, _p, _p, _p, _p, _i, _i, _i, _i, _i, _f, _p], _i),
    "minisora_attn_fwd_workspace_bytes": ([_i, _i, _i, _i, _i, _i, _i], _size),
    "minisora_attn_fwd_stage": ([_i, _i, _i], _i),
    # dtype, dout, q, k, v, out, lse, dq, dk, dv, workspace, B, H, Nq, Nk, d, scale, deterministic, stream
    "minisora_attn_bwd": ([_i, _p, _p, _p, _p, _p, _p, _p, _p, _p, _p, _i, _i, _i, _i, _i, _f, _i, _p], _i),
    "minisora_attn_bwd_workspace_bytes": ([_i, _i, _i, _i, _i, _i, _i], _size),
    "minisora_attn_error_string": ([_i], ctypes.c_char_p),
}


def declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Set argtypes/restype of every launcher on an opened library; returns it."""
    for name, (argtypes, restype) in SIGNATURES.items():
        fn = getattr(lib, name)  # AttributeError if the library lacks a symbol: caller falls back
        fn.argtypes, fn.restype = argtypes, restype
    return lib


def load(path) -> ctypes.CDLL:
    """Open the kernel library at `path` and declare its launchers."""
    return declare(ctypes.CDLL(str(path)))


def error_string(lib: ctypes.CDLL, code: int) -> str:
    return lib.minisora_attn_error_string(code).decode()
