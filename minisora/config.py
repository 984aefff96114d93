"""Configs for every part of minisora, as dataclasses with named presets.

A preset is a whole recipe (data size, model sizes, training lengths) that fits one kind of machine:

    tiny   a laptop CPU or CI: trains in minutes, 9 frames of 32x32
    colab  a free Colab T4 (16 GB): about an hour, 17 frames of 64x64
    large  an A100/H100: 33 frames of 128x128, ~100M-parameter DiT

`get_preset("tiny")` returns a fresh `MiniSoraConfig`; change any field afterwards with
`dataclasses.replace` or plain attribute assignment. Configs round-trip through JSON
(`to_dict` / `from_dict`) so a saved model knows exactly how it was built.

Setting the environment variable MINISORA_SMOKE=1 makes notebooks and the CLI pick `tiny` with very
short training: that is how CI runs every lesson top to bottom in minutes.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field


@dataclass
class DataConfig:
    """What videos look like: size of one clip and where they come from."""

    dataset: str = "shapes"  # "shapes" (procedural, default) | "digits" | "mnist" | "folder" | "hf"
    num_frames: int = 9  # T, must be 1 + k * vae temporal factor
    height: int = 32
    width: int = 32
    max_objects: int = 2  # shapes world: 1..max_objects objects per video
    gravity: bool = False  # shapes world: some videos fall under gravity
    occluder: bool = False  # shapes world: some videos have a grey bar in front
    collisions: float = 0.0  # shapes world: share of videos where objects collide ("a red circle hits ...")
    fps: int = 8  # only for writing GIF/MP4 files and for seconds <-> frames


@dataclass
class VAEConfig:
    """Causal 3D convolutional VAE. Spatial factor = 2**len(channel_mults[1:]), time factor = 2**time_downsamples."""

    in_channels: int = 3
    latent_channels: int = 4
    base_channels: int = 8  # 3D convolutions at full resolution dominate CPU time: keep this narrow
    # One entry per resolution level; len-1 spatial halvings. Tiny: 2x in space and time. At 4x/4x a
    # 32x32 world lost its small objects and blurred motion (round-trip score 0.58 after 2000 steps);
    # at 2x/2x it keeps them (see notebook 02 and benchmarks/RESULTS.md).
    channel_mults: tuple[int, ...] = (1, 2)
    time_downsamples: int = 1  # causal halvings of time: 1 -> 2x (after the first frame)
    num_res_blocks: int = 1
    kl_weight: float = 1e-6
    object_weight: float = 5.0  # reconstruction weight of object (non-background) pixels; 1 = plain MSE

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2**self.time_downsamples


@dataclass
class TextConfig:
    """Small transformer text encoder trained jointly with the DiT."""

    dim: int = 64
    depth: int = 2
    heads: int = 4
    max_len: int = 24  # prompts are cut to this many words (a warning says so)


@dataclass
class DiTConfig:
    """Diffusion transformer over spacetime patches."""

    patch_size: tuple[int, int, int] = (1, 4, 4)  # (pt, ph, pw) in latent units: 8x8 pixels with the tiny VAE
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    qk_norm: bool = True
    attention_backend: str = "auto"  # "auto" | "reference" | "sdpa" | "minisora"


@dataclass
class FlowConfig:
    """Rectified flow: how timesteps are drawn in training and how sampling runs."""

    logit_mean: float = 0.0  # logit-normal timestep sampling (SD3)
    logit_std: float = 1.0
    shift: float = 1.0  # >1 spends more time at high noise; scaled with token count (resolution-aware)
    base_tokens: int = 48  # token count at which `shift` applies unchanged
    text_dropout: float = 0.1  # drop the prompt this often in training -> classifier-free guidance
    steps: int = 20  # default sampling steps
    guidance: float = 3.0  # default classifier-free guidance scale
    sampler: str = "euler"  # "euler" | "heun"
    # per-sample probability of each conditioning pattern in DiT training (see flow.conditioning_mask)
    cond_probs: dict[str, float] = field(
        default_factory=lambda: {"none": 0.6, "first": 0.15, "first_k": 0.1, "last_k": 0.1, "both_ends": 0.05}
    )


@dataclass
class TrainConfig:
    """Training lengths and optimiser settings for both stages."""

    seed: int = 0
    batch_size: int = 16
    vae_steps: int = 1000  # tiny: round-trip score 0.76 at 1000 steps, 0.98 at 2500 (notebook 02)
    vae_lr: float = 3e-3
    dit_steps: int = 1200
    dit_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    vae_batch_size: int = 8  # the VAE's 3D convolutions at full resolution cost far more than a DiT step
    latent_cache: int = 2048  # DiT trains on the latents of this many videos, encoded once (0 = every step)
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    amp: bool = False  # bfloat16/float16 autocast on GPU; ignored on CPU
    checkpoint_every: int = 200
    log_every: int = 10
    eval_every: int = 500  # DiT: score held-out prompts with the evaluator every this many steps (0 = never)
    eval_prompts: int = 8  # how many held-out prompts (one video each) such a check generates


@dataclass
class MiniSoraConfig:
    """Everything needed to rebuild a MiniSora model and its training run."""

    name: str = "tiny"
    data: DataConfig = field(default_factory=DataConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    text: TextConfig = field(default_factory=TextConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MiniSoraConfig":
        """Inverse of `to_dict`; unknown keys raise so a config from another version is not misread."""
        parts = {"data": DataConfig, "vae": VAEConfig, "text": TextConfig, "dit": DiTConfig,
                 "flow": FlowConfig, "train": TrainConfig}
        kwargs = {}
        for key, value in d.items():
            if key in parts:
                sub = parts[key]
                known = {f.name for f in dataclasses.fields(sub)}
                unknown = set(value) - known
                if unknown:
                    raise ValueError(f"config section '{key}' has unknown fields {sorted(unknown)}; "
                                     f"was it written by another minisora version?")
                # JSON turns tuples into lists; dataclass fields typed as tuples get them back.
                value = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
                kwargs[key] = sub(**value)
            elif key == "name":
                kwargs[key] = value
            else:
                raise ValueError(f"unknown config section '{key}'")
        return cls(**kwargs)


def _tiny() -> MiniSoraConfig:
    # shift 3 at the tiny video's 80 tokens: more training (and sampling) time at high noise, where
    # layout and motion are decided; at shift ~1.3 objects split and jumped between latent frames.
    # Guidance 4: on 48 validation captions (world seed 778, used neither for training nor for the
    # held-out score) the shipped model scored 0.60 / 0.69 / 0.68 / 0.68 at guidance 3 / 4 / 5 / 6.
    return MiniSoraConfig(name="tiny", flow=FlowConfig(shift=3.0, base_tokens=80, guidance=4.0),
                          train=TrainConfig(latent_cache=8192))


def _colab() -> MiniSoraConfig:
    return MiniSoraConfig(
        name="colab",
        data=DataConfig(num_frames=17, height=64, width=64, max_objects=3, gravity=True, occluder=True),
        vae=VAEConfig(latent_channels=8, base_channels=64, channel_mults=(1, 2, 4), time_downsamples=2),
        text=TextConfig(dim=128, depth=2, heads=4, max_len=32),
        dit=DiTConfig(patch_size=(1, 2, 2), dim=384, depth=8, heads=6),
        flow=FlowConfig(base_tokens=5 * 16 * 16 // 4, steps=30),
        train=TrainConfig(batch_size=32, vae_steps=4000, vae_lr=1e-3, dit_steps=20000, dit_lr=3e-4,
                          ema_decay=0.999, amp=True, checkpoint_every=1000, log_every=50),
    )


def _large() -> MiniSoraConfig:
    return MiniSoraConfig(
        name="large",
        data=DataConfig(num_frames=33, height=128, width=128, max_objects=3, gravity=True, occluder=True),
        vae=VAEConfig(latent_channels=16, base_channels=96, channel_mults=(1, 2, 4, 4), time_downsamples=2),
        text=TextConfig(dim=256, depth=4, heads=8, max_len=32),
        dit=DiTConfig(patch_size=(1, 2, 2), dim=768, depth=12, heads=12),
        flow=FlowConfig(base_tokens=9 * 16 * 16 // 4, steps=50),
        train=TrainConfig(batch_size=64, vae_steps=20000, vae_lr=5e-4, dit_steps=100000, dit_lr=2e-4,
                          ema_decay=0.9999, amp=True, checkpoint_every=2000, log_every=100),
    )


PRESETS = {"tiny": _tiny, "colab": _colab, "large": _large}


def get_preset(name: str) -> MiniSoraConfig:
    """A fresh config for a named preset ("tiny", "colab", "large")."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}'; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def smoke_mode() -> bool:
    """True when MINISORA_SMOKE=1: notebooks and CLI shrink everything to run in seconds (CI)."""
    return os.environ.get("MINISORA_SMOKE", "0") not in ("", "0", "false", "False")


def lesson_preset() -> str:
    """The preset a lesson trains at: "tiny" on a CPU and in smoke mode, "colab" on a GPU.

    MINISORA_PRESET=<name> overrides the choice (say, "tiny" on a GPU to finish a lesson in seconds).
    """
    chosen = os.environ.get("MINISORA_PRESET", "")
    if chosen:
        get_preset(chosen)  # an unknown name fails here, with the list of presets
        return chosen
    if smoke_mode():
        return "tiny"
    import torch  # imported here: configs are plain data and load without torch

    return "colab" if torch.cuda.is_available() else "tiny"
