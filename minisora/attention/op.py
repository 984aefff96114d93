"""The registered operator: loading it, and what PyTorch needs around the C++/CUDA kernels.

    torch.ops.minisora.attn_fwd(q, k, v, scale) -> (out, lse)
    torch.ops.minisora.attn_bwd(dout, q, k, v, out, lse, scale) -> (dq, dk, dv)

q `(B, H, N_q, d)`, k/v `(B, H, N_k, d)`, out/dout/dq `(B, H, N_q, d)`, lse `(B, H, N_q)` in
float32 (float64 for float64 inputs). The schemas and the CPU kernels come from csrc/binding.cpp.
Here we add, once the library is loaded:
  * a fake (meta) implementation, so torch.compile can trace shapes without running a kernel;
  * an autograd rule: attn_fwd's backward is attn_bwd (lse is an auxiliary output: not
    differentiable);
  * the CUDA kernel, registered from Python.

Why the CUDA kernel is registered from Python rather than in binding.cpp: the kernels are
torch-free .cu files (a .cu including torch headers takes minutes per architecture to compile),
so something must turn tensors into raw pointers and find the current CUDA stream. In C++ that
needs PyTorch's CUDA headers and libraries (absent from CPU builds of PyTorch) and a second
build variant of the binding linked against the nvcc output. From Python it is
`tensor.data_ptr()` and `torch.cuda.current_stream().cuda_stream` passed through ctypes: the
binding stays one CPU-only file that builds everywhere, a broken CUDA build cannot take the CPU
op down with it, and the benchmark can pick a kernel stage per call. The cost is a few
microseconds of Python per call, small next to a kernel launch on the shapes where the GPU matters.

The kernels implement FlashAttention (Dao et al., arXiv:2205.14135) in FlashAttention-2's work
partitioning and backward (Dao, arXiv:2307.08691); csrc/README.md describes each file.
"""

from __future__ import annotations

import warnings

import torch

from . import build, cuda_lib

CPU_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# Codes of `enum minisora_dtype` in csrc/cuda/launchers.h.
CUDA_DTYPES = {torch.float32: cuda_lib.F32, torch.float16: cuda_lib.F16, torch.bfloat16: cuda_lib.BF16}
CUDA_HEAD_DIMS = cuda_lib.HEAD_DIMS

# Filled by the first load(): whether each part is usable and, if not, why.
_state: dict = {"tried": False, "ok": False, "reason": None, "cuda_lib": None, "cuda_reason": None}


@torch.compiler.assume_constant_result
def load() -> bool:
    """Build (first time only) and load the extension; return whether the op is usable.

    Any failure -- a compiler error, a library missing a symbol, a PyTorch too old for an API used
    here -- warns once, naming the cause (see unavailable_reason()), and returns False: "auto" then
    uses SDPA. torch.compile runs this at trace time and treats the answer as a constant.
    """
    if _state["tried"]:
        return _state["ok"]
    _state["tried"] = True
    try:
        build.build_cpu_ops()  # builds if needed, then loads the library: the op now exists
        _register_fake_and_autograd()
    except Exception as err:  # noqa: BLE001 -- whatever breaks, the dispatcher must keep working
        _state["reason"] = f"building or loading the C++ extension failed: {type(err).__name__}: {err}"
        warnings.warn(f"minisora attention: {_state['reason']}; falling back to SDPA", RuntimeWarning, stacklevel=3)
        return False
    _state["ok"] = True
    if torch.cuda.is_available():
        try:
            _state["cuda_lib"] = cuda_lib.load(build.build_cuda_kernels())
            torch.library.register_kernel("minisora::attn_fwd", "cuda", _cuda_fwd_kernel)
            torch.library.register_kernel("minisora::attn_bwd", "cuda", cuda_attn_bwd)
        except Exception as err:  # noqa: BLE001
            _state["cuda_lib"] = None
            _state["cuda_reason"] = f"building or loading the CUDA kernels failed: {type(err).__name__}: {err}"
            warnings.warn(f"minisora attention: {_state['cuda_reason']}; CUDA inputs fall back to SDPA",
                          RuntimeWarning, stacklevel=3)
    else:
        _state["cuda_reason"] = "PyTorch sees no CUDA GPU"
    return True


def unavailable_reason() -> str | None:
    """Why load() failed, or None."""
    return _state["reason"]


def device_supported(device_type: str) -> bool:
    """Whether the loaded op has a kernel for this device type ("cpu" or "cuda")."""
    if device_type == "cpu":
        return _state["ok"]
    return device_type == "cuda" and _state["cuda_lib"] is not None


def unsupported_reason(q: torch.Tensor) -> str | None:
    """Why the op cannot take inputs like q `(B, H, N, d)` on q's device, or None if it can."""
    if q.device.type == "cpu":
        if q.dtype not in CPU_DTYPES:
            return f"the CPU kernel supports {[str(t) for t in CPU_DTYPES]}, not {q.dtype}"
        return None
    if q.device.type != "cuda":
        return f"the minisora op has no kernel for device type {q.device.type!r}"
    if _state["cuda_lib"] is None:
        return f"the CUDA kernels are unavailable: {_state['cuda_reason']}"
    if q.dtype not in CUDA_DTYPES:
        return f"the CUDA kernels support float32, float16 and bfloat16, not {q.dtype}; cast q, k, v"
    if q.shape[-1] not in CUDA_HEAD_DIMS:
        return f"the CUDA kernels support head dims {CUDA_HEAD_DIMS}, not d={q.shape[-1]}"
    return None


def check_supported(q: torch.Tensor) -> None:
    """Raise TypeError (unsupported dtype) or ValueError (anything else) if the op cannot take q."""
    reason = unsupported_reason(q)
    if reason is not None:
        dtype_ok = q.dtype in (CPU_DTYPES if q.device.type == "cpu" else CUDA_DTYPES)
        raise (ValueError if dtype_ok else TypeError)(f'backend="minisora": {reason}')


def attn(q, k, v, scale: float) -> torch.Tensor:
    """out `(B, H, N_q, d)` of the registered op (differentiable). Inputs already validated."""
    return torch.ops.minisora.attn_fwd(q, k, v, scale)[0]


# --- fake implementations and autograd -------------------------------------------------------


def _lse_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _attn_fwd_fake(q, k, v, scale):
    # Shapes and dtypes only; new_empty is contiguous, like the kernels' outputs.
    return q.new_empty(q.shape), q.new_empty(q.shape[:-1], dtype=_lse_dtype(q.dtype))


def _attn_bwd_fake(dout, q, k, v, out, lse, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.scale = scale
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout, _dlse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = torch.ops.minisora.attn_bwd(dout.contiguous(), q, k, v, out, lse, ctx.scale)
    return dq, dk, dv, None


def _register_fake_and_autograd() -> None:
    torch.library.register_fake("minisora::attn_fwd", _attn_fwd_fake)
    torch.library.register_fake("minisora::attn_bwd", _attn_bwd_fake)
    torch.library.register_autograd("minisora::attn_fwd", _backward, setup_context=_setup_context)


# --- CUDA: the launchers of csrc/cuda/launchers.h through ctypes ----------------------------


def _check_cuda_inputs(name: str, q, k, v, dout=None, out=None, lse=None) -> None:
    """The promises the CUDA kernels rely on (the CPU kernel checks the same in C++), each failure
    naming the argument: TypeError for a dtype, ValueError for anything else."""
    where = f"minisora::{name} (CUDA)"
    tensors = {"q": q, "k": k, "v": v, "dout": dout, "out": out, "lse": lse}
    if isinstance(q, torch.Tensor) and q.dtype not in CUDA_DTYPES:
        raise TypeError(f"{where}: q has dtype {q.dtype}; the CUDA kernels take float32, float16, bfloat16")
    for arg, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{where}: {arg} must be a tensor, got {type(t).__name__}")
        if t.device != q.device:
            raise ValueError(f"{where}: {arg} is on {t.device} but q is on {q.device}; move it")
        if arg != "lse" and t.dim() != 4:
            raise ValueError(f"{where}: {arg} must be (B, H, N, d), got shape {tuple(t.shape)}")
        if arg != "lse" and t.dtype != q.dtype:
            raise TypeError(f"{where}: {arg} has dtype {t.dtype} but q has {q.dtype}; cast it")
    reason = unsupported_reason(q)
    if reason is not None:
        raise ValueError(f"{where}: {reason}")
    (b, h, n_q, d), n_k = q.shape, k.shape[2]
    if tuple(k.shape[:2]) != (b, h) or k.shape[3] != d:
        raise ValueError(f"{where}: k must be (B, H, N_k, d) = ({b}, {h}, N_k, {d}) like q, got {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"{where}: v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    if n_k == 0 and n_q > 0:
        raise ValueError(f"{where}: k and v have no keys (N_k = 0): the softmax over keys is undefined")
    for arg in ("dout", "out"):
        t = tensors[arg]
        if t is not None and t.shape != q.shape:
            raise ValueError(f"{where}: {arg} must have q's shape {tuple(q.shape)}, got {tuple(t.shape)}")
    if lse is not None:
        if tuple(lse.shape) != (b, h, n_q):
            raise ValueError(f"{where}: lse must be (B, H, N_q) = {(b, h, n_q)}, got {tuple(lse.shape)}")
        if lse.dtype != torch.float32:
            raise TypeError(f"{where}: lse must be float32 on CUDA, got {lse.dtype}")


def _call(lib, fn, *args) -> None:
    code = fn(*args)
    if code != 0:
        raise RuntimeError(f"minisora CUDA kernel failed ({code}): {cuda_lib.error_string(lib, code)}")


def cuda_attn_fwd(q, k, v, scale: float, stage: int = -1):
    """CUDA forward -> (out, lse float32). `stage` picks a teaching kernel (launchers.h: 0..3, -1 best)."""
    _check_cuda_inputs("attn_fwd", q, k, v)
    lib = _state["cuda_lib"]
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    (b, h, n_q, d), n_k, code = q.shape, k.shape[2], CUDA_DTYPES[q.dtype]
    out = torch.empty_like(q)
    lse = q.new_empty((b, h, n_q), dtype=torch.float32)
    with torch.cuda.device(q.device):
        nbytes = lib.minisora_attn_fwd_workspace_bytes(code, stage, b, h, n_q, n_k, d)
        workspace = torch.empty(nbytes, dtype=torch.uint8, device=q.device) if nbytes else None
        _call(lib, lib.minisora_attn_fwd, code, stage, q.data_ptr(), k.data_ptr(), v.data_ptr(),
              out.data_ptr(), lse.data_ptr(), None if workspace is None else workspace.data_ptr(),
              b, h, n_q, n_k, d, scale, torch.cuda.current_stream().cuda_stream)
    return out, lse


def _cuda_fwd_kernel(q, k, v, scale):
    return cuda_attn_fwd(q, k, v, scale)


def cuda_attn_bwd(dout, q, k, v, out, lse, scale: float, deterministic: bool | None = None):
    """CUDA backward -> (dq, dk, dv), FlashAttention-2.

    deterministic: None follows torch.use_deterministic_algorithms(). True computes dQ in its own
    pass (no atomics: bit-reproducible); False adds each key block's dQ share with atomics.
    """
    _check_cuda_inputs("attn_bwd", q, k, v, dout, out, lse)
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    lib = _state["cuda_lib"]
    dout, q, k, v, out, lse = (t.contiguous() for t in (dout, q, k, v, out, lse))
    (b, h, n_q, d), n_k, code = q.shape, k.shape[2], CUDA_DTYPES[q.dtype]
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    with torch.cuda.device(q.device):
        nbytes = lib.minisora_attn_bwd_workspace_bytes(code, b, h, n_q, n_k, d, int(deterministic))
        workspace = torch.empty(max(nbytes, 4), dtype=torch.uint8, device=q.device)
        _call(lib, lib.minisora_attn_bwd, code, dout.data_ptr(), q.data_ptr(), k.data_ptr(),
              v.data_ptr(), out.data_ptr(), lse.data_ptr(), dq.data_ptr(), dk.data_ptr(),
              dv.data_ptr(), workspace.data_ptr(), b, h, n_q, n_k, d, scale, int(deterministic),
              torch.cuda.current_stream().cuda_stream)
    return dq, dk, dv
