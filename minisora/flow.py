"""Rectified flow: noise, the training loss, samplers and classifier-free guidance.

Rectified flow (Liu et al., "Flow Straight and Fast", arXiv:2209.03003) with the logit-normal timesteps
and resolution-dependent shift of SD3 (Esser et al., arXiv:2403.03206), classifier-free guidance (Ho &
Salimans, arXiv:2207.12598), Heun's second-order step as in EDM (Karras et al., arXiv:2206.00364), and a
timestep per latent frame as in Diffusion Forcing (Chen et al., arXiv:2407.01392).

A straight line joins each clean latent z0 (t = 0) to a noise sample eps (t = 1):

    zt = (1 - t) * z0 + t * eps,        velocity  v = d zt / dt = eps - z0.

The DiT learns v from (zt, t). Generation integrates dz/dt = v from t = 1 (noise) back to t = 0.

Timesteps are per latent frame, `t (B, T')`. A frame that is *given* (the first frame for
image-to-video, the last frames for backward extension, both ends for connect/loop) has t = 0 and
stays clean; the others are generated. Training draws such conditioning patterns at random
(`conditioning_mask`) and scores only the generated frames, so one model learns every prompting mode.

    t = sample_t(B, generator, shift=resolution_shift(cfg.shift, num_tokens, cfg.base_tokens))
    cond_mask = conditioning_mask(B, T', cfg.cond_probs, generator)
    loss = flow_loss(lambda zt, t: dit(zt, t, context, mask), z0, t, eps, cond_mask)
    z0 = sample(guided_velocity(dit, context, mask, guidance=3.0), noise, steps=20, sampler="euler")
"""

from __future__ import annotations

from typing import Callable

import torch
from einops import rearrange, reduce
from tqdm.auto import trange

PATTERNS = ("none", "first", "first_k", "last_k", "both_ends")
VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (zt, t (B, T')) -> v


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = shift * t / (1 + (shift - 1) * t): maps [0, 1] onto itself, pushing t towards 1 (more noise)
    when shift > 1. Bigger videos need it: more tokens average away more noise, so a given t looks
    cleaner to the model at high resolution than at low (SD3, section 5.3.2)."""
    return shift * t / (1 + (shift - 1) * t)


def _unshift_time(t: float, shift: float) -> float:
    """Inverse of `shift_time` for one number."""
    return t / (shift - (shift - 1) * t)


def resolution_shift(base_shift: float, num_tokens: int, base_tokens: int) -> float:
    """The shift for `num_tokens` tokens when `base_shift` suits `base_tokens`: grows as sqrt(tokens)."""
    if base_shift <= 0 or num_tokens < 1 or base_tokens < 1:
        raise ValueError(f"need base_shift > 0 and positive token counts, got {base_shift}, {num_tokens}, {base_tokens}")
    return base_shift * (num_tokens / base_tokens) ** 0.5


def sample_t(batch: int, generator: torch.Generator | None = None, logit_mean: float = 0.0,
             logit_std: float = 1.0, shift: float = 1.0, device=None) -> torch.Tensor:
    """Training timesteps `(B,)` in (0, 1): logit-normal (sigmoid of a Gaussian), then shifted.

    Logit-normal puts most samples at middle t, where predicting v is hardest; t near 0 or 1 is
    nearly trivial (SD3 found this beats uniform t).
    """
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    u = torch.randn(batch, generator=generator, device=_generator_device(generator))
    t = torch.sigmoid(logit_mean + logit_std * u)
    return shift_time(t, shift).to(device or t.device)


def conditioning_mask(batch: int, num_latent_frames: int, probs: dict[str, float],
                      generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Random conditioning patterns `(B, T')` bool, True = a given (clean) frame.

    Each sample picks one pattern with the given probabilities (normalised):
        none       nothing given (text-to-video)
        first      frame 0 given (image-to-video)
        first_k    the first k frames given, k in 1..T'-1 (extend forward)
        last_k     the last k frames given, k in 1..T'-1 (extend backward)
        both_ends  the first k and the last k frames, k in 1..(T'-1)//2 (connect, loop)
    A pattern that would leave no frame to generate (any pattern when T' = 1, both_ends when
    T' = 2) becomes none.
    """
    unknown = set(probs) - set(PATTERNS)
    if unknown:
        raise ValueError(f"unknown conditioning patterns {sorted(unknown)}; use keys from {PATTERNS}")
    weights = torch.tensor([float(probs.get(name, 0.0)) for name in PATTERNS])
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"conditioning probabilities must be >= 0 with a positive sum, got {probs}")
    if num_latent_frames < 1:
        raise ValueError(f"num_latent_frames must be >= 1, got {num_latent_frames}")
    gen_device = _generator_device(generator)
    pattern = torch.multinomial(weights.to(gen_device), batch, replacement=True, generator=generator)  # (B,)
    k = torch.randint(1, max(num_latent_frames, 2), (batch, 1), generator=generator, device=gen_device)
    k_end = torch.randint(1, max((num_latent_frames - 1) // 2, 1) + 1, (batch, 1), generator=generator,
                          device=gen_device)
    frame = torch.arange(num_latent_frames, device=gen_device)  # (T',)
    candidates = torch.stack([
        torch.zeros(batch, num_latent_frames, dtype=torch.bool, device=gen_device),  # none
        (frame < 1).expand(batch, num_latent_frames),  # first
        frame < k,  # first_k
        frame >= num_latent_frames - k,  # last_k
        (frame < k_end) | (frame >= num_latent_frames - k_end),  # both_ends
    ])  # (patterns, B, T')
    mask = candidates[pattern, torch.arange(batch, device=gen_device)]  # (B, T')
    mask[mask.all(dim=1)] = False
    return mask.to(device or gen_device)


def add_noise(z0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """zt = (1 - t) z0 + t eps for z0, eps `(B, C, T', H', W')` and t `(B, T')`, `(B,)` or a number."""
    t = rearrange(_frame_times(t, z0).to(z0.dtype), "b t -> b 1 t 1 1")
    return (1 - t) * z0 + t * eps


def flow_loss(model_fn: VelocityFn, z0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
              cond_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between model_fn(zt, t) and v = eps - z0, on generated frames only.

    Args:
        model_fn: `(zt, t (B, T')) -> v`, e.g. a DiT with its text already bound.
        z0, eps: `(B, C, T', H', W')`.
        t: `(B, T')` or `(B,)`. Frames in `cond_mask` get t = 0, so they enter clean.
        cond_mask: `(B, T')` bool, True = given frame (excluded from the loss), or None.
    Returns:
        scalar loss, averaged over every value of every generated frame.
    """
    t = _frame_times(t, z0)
    if cond_mask is not None:
        t = t.masked_fill(cond_mask, 0.0)
    zt = add_noise(z0, eps, t)
    v_pred = model_fn(zt, t)
    per_frame = reduce((v_pred.float() - (eps - z0).float()) ** 2, "b c t h w -> b t", "mean")  # (B, T')
    if cond_mask is None:
        return per_frame.mean()
    generated = (~cond_mask).float()
    return (per_frame * generated).sum() / generated.sum().clamp(min=1.0)


@torch.no_grad()
def sample(velocity_fn: VelocityFn, noise: torch.Tensor, steps: int, sampler: str = "euler",
           shift: float = 1.0, cond: torch.Tensor | None = None, cond_mask: torch.Tensor | None = None,
           z_init: torch.Tensor | None = None, t_start: float = 1.0,
           callback: Callable | None = None, progress: bool = True) -> torch.Tensor:
    """Integrate dz/dt = v from t = t_start down to t = 0 and return z0 `(B, C, T', H', W')`.

    Args:
        velocity_fn: `(zt, t (B, T')) -> v` (see `guided_velocity`).
        noise: the starting noise eps `(B, C, T', H', W')`.
        steps: number of steps (Heun calls the model twice per step).
        sampler: "euler" (first order) or "heun" (second order: averages the slopes at both ends).
        shift: time-grid shift (see `shift_time`); > 1 takes smaller steps near t = 1.
        cond, cond_mask: given frames `(B, C, T', H', W')` and which they are `(B, T')` bool. Given
            frames are held clean with t = 0 at every step and come back exactly.
        z_init, t_start: SDEdit. Start from z_init noised to t_start instead of pure noise;
            t_start = 0 returns z_init, t_start = 1 ignores it.
        callback: called as `callback(step, t, zt, z0_pred)` before each step; z0_pred = zt - t * v is
            the model's current guess of the clean latent (for watching a trajectory).
        progress: show a tqdm progress bar.
    """
    _check_sample_args(noise, steps, sampler, shift, cond, cond_mask, z_init, t_start)
    b, num_latent_frames = noise.shape[0], noise.shape[2]
    no_given = torch.zeros(b, num_latent_frames, dtype=torch.bool, device=noise.device)
    given = no_given if cond_mask is None else cond_mask
    given_5d = rearrange(given, "b t -> b 1 t 1 1")

    def hold_given(z):  # put the given frames back, exactly
        return z if cond is None else torch.where(given_5d, cond.to(z), z)

    def velocity(z, t: float):  # given frames are clean: their t is 0
        return velocity_fn(z, torch.full((b, num_latent_frames), t, device=z.device).masked_fill(given, 0.0))

    if z_init is not None and t_start == 0:  # nothing to denoise
        return hold_given(z_init.clone())
    z = hold_given(noise if z_init is None else add_noise(z_init, noise, t_start))
    # Equal steps in "unshifted" time, mapped through the shift; starts exactly at t_start.
    grid = torch.linspace(_unshift_time(t_start, shift), 0.0, steps + 1, dtype=torch.float64)
    times = shift_time(grid, shift).tolist()
    for i in trange(steps, disable=not progress, desc=f"sampling ({sampler})", leave=False):
        t, t_next = times[i], times[i + 1]
        v = velocity(z, t)
        if callback is not None:
            callback(i, t, z, hold_given(z - t * v))
        z_next = z + (t_next - t) * v  # Euler: follow the slope at t
        if sampler == "heun":  # ...then redo the step with the mean of the slopes at t and t_next
            z_next = z + (t_next - t) * 0.5 * (v + velocity(hold_given(z_next), t_next))
        z = hold_given(z_next)
    return z


def guided_velocity(model_fn: Callable, context: torch.Tensor, context_mask: torch.Tensor, guidance: float,
                    null_context: torch.Tensor | None = None, null_mask: torch.Tensor | None = None) -> VelocityFn:
    """Classifier-free guidance: a velocity fn `(zt, t) -> v_u + guidance * (v_c - v_u)`.

    v_c is the model with the prompt, v_u without it. guidance = 1 is the plain conditional model
    (one pass), 0 the unconditional one, > 1 pushes samples further towards the prompt.

    Args:
        model_fn: `(zt, t, context, context_mask) -> v`, e.g. a DiT.
        context, context_mask: the prompt, `(B, L, Dt)` and `(B, L)` bool.
        null_context, null_mask: "no prompt"; default: the same context with every word masked,
            which the DiT reads as its learned null token.
    """
    if not guidance >= 0:
        raise ValueError(f"guidance must be >= 0 (0 = ignore the prompt, 1 = plain conditional, "
                         f"3 = typical), got {guidance}")
    if null_context is None:
        null_context, null_mask = context, torch.zeros_like(context_mask)
    if null_context.shape != context.shape or null_mask.shape != context_mask.shape:
        raise ValueError(f"null_context/null_mask must match context/context_mask in shape, got "
                         f"{tuple(null_context.shape)} vs {tuple(context.shape)}")

    def velocity(zt, t):
        if guidance == 1:
            return model_fn(zt, t, context, context_mask)
        if guidance == 0:
            return model_fn(zt, t, null_context, null_mask)
        # Both branches in one batch: one model call of twice the batch is faster than two.
        v_c, v_u = model_fn(torch.cat([zt, zt]), torch.cat([t, t]), torch.cat([context, null_context]),
                            torch.cat([context_mask, null_mask])).chunk(2)
        return v_u + guidance * (v_c - v_u)

    return velocity


def _frame_times(t: torch.Tensor | float, z: torch.Tensor) -> torch.Tensor:
    """t (a number, `(B,)` or `(B, T')`) -> `(B, T')` for latents z `(B, C, T', H', W')`."""
    b, num_latent_frames = z.shape[0], z.shape[2]
    t = torch.as_tensor(t, device=z.device)
    if t.dim() == 0:
        return t.expand(b, num_latent_frames)
    if tuple(t.shape) == (b,):
        return t[:, None].expand(b, num_latent_frames)
    if tuple(t.shape) != (b, num_latent_frames):
        raise ValueError(f"t must be (B, T') = {(b, num_latent_frames)} or (B,) for latents {tuple(z.shape)}, "
                         f"got {tuple(t.shape)}")
    return t


def _generator_device(generator: torch.Generator | None):
    # Random numbers are drawn where the generator lives, then moved, so a CPU generator gives the
    # same draws whatever device the model is on.
    return generator.device if generator is not None else None


def _check_sample_args(noise, steps, sampler, shift, cond, cond_mask, z_init, t_start) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1 (try 20), got {steps!r}")
    if sampler not in ("euler", "heun"):
        raise ValueError(f"sampler must be 'euler' or 'heun', got {sampler!r}")
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift}")
    if noise.dim() != 5:
        raise ValueError(f"noise must be (B, C, T', H', W'), got {tuple(noise.shape)}")
    if (cond is None) != (cond_mask is None):
        raise ValueError("give cond and cond_mask together (the given frames and which frames they are)")
    if cond is not None and (cond.shape != noise.shape or cond_mask.shape != (noise.shape[0], noise.shape[2])):
        raise ValueError(f"cond must have the noise's shape {tuple(noise.shape)} and cond_mask (B, T') = "
                         f"{(noise.shape[0], noise.shape[2])}, got {tuple(cond.shape)} and {tuple(cond_mask.shape)}")
    if not 0 <= t_start <= 1:
        raise ValueError(f"t_start (edit strength) must be in [0, 1], got {t_start}")
    if t_start < 1 and z_init is None:
        raise ValueError("t_start < 1 starts from a partly noised video: pass it as z_init")
    if z_init is not None and z_init.shape != noise.shape:
        raise ValueError(f"z_init must have the noise's shape {tuple(noise.shape)}, got {tuple(z_init.shape)}")
