"""Causal 3D convolutional video VAE: squeeze videos (B, 3, T, H, W) into small latents and back.

Why a VAE: the diffusion transformer pays per token, so it works on a compressed *spacetime latent*
instead of pixels (Sora's "video compression network"). In the tiny preset (2x in time and space) a
9x32x32 RGB video (27,648 numbers) becomes a 4x5x16x16 latent (5,120 numbers):

    video (B, 3, T, H, W)  <->  latent (B, C, 1 + (T-1)/tf, H/sf, W/sf)    tf, sf = time, space factors

Why causal: every convolution pads only on the *past* side of the time axis, so latent frame j sees
only video frames <= tf*j. Frame 0 is therefore encoded on its own and an image is just a 1-frame
video: one set of weights compresses images and videos of any length.

Sources: the VAE (Kingma & Welling, arXiv:1312.6114); causal 3D convolutions that make an image a
one-frame video, as in MAGVIT-v2 (arXiv:2310.05737) and CogVideoX's 3D causal VAE (arXiv:2408.06072).

Reading order: CausalConv3d -> FrameNorm -> ResBlock -> Upsample -> Encoder / Decoder -> VideoVAE,
and check_video_size, which says which sizes fit.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .config import VAEConfig


def check_video_size(num_frames, height, width, temporal_factor, spatial_factor, patch_size=(1, 1, 1)) -> None:
    """Raise ValueError, naming the nearest sizes that work, if a video cannot be encoded and patchified.

    Valid sizes: num_frames = 1 + tf*k (the first frame, then whole groups of tf) and its 1 + k latent
    frames divide into patches of pt; height a multiple of sf*ph; width a multiple of sf*pw.
    """
    pt, ph, pw = patch_size
    tf, sf = temporal_factor, spatial_factor
    problems = []
    for name, value in (("num_frames", num_frames), ("height", height), ("width", width)):
        if not isinstance(value, numbers.Integral):
            problems.append(f"{name} must be a whole number, got {value!r}")
        elif value < 1:
            problems.append(f"{name} must be at least 1, got {value}")
    if problems:
        raise ValueError("bad video size: " + "; ".join(problems))

    # Frames: valid counts are T_m = 1 + tf*(pt*m - 1) for m = 1, 2, ...; find those either side of T.
    m = (num_frames - 1 + tf) // (tf * pt)
    if (num_frames - 1) % tf or (1 + (num_frames - 1) // tf) % pt:
        near = [1 + tf * (pt * k - 1) for k in (m, m + 1) if k >= 1]
        rule = f"use 1 + {tf}k frames" + (f" whose 1 + k latent frames are a multiple of {pt} (the patch's time size)"
                                          if pt > 1 else "")
        problems.append(f"num_frames={num_frames} does not fit: {rule}, such as {' or '.join(map(str, near))}")
    for name, value, p in (("height", height, ph), ("width", width, pw)):
        step = sf * p
        if value % step:
            near = [n for n in (value // step * step, (value // step + 1) * step) if n > 0]
            why = f"{sf} from the VAE x {p} from the patch" if p > 1 else "the VAE's spatial factor"
            problems.append(f"{name}={value} must be a multiple of {step} ({why}): try {' or '.join(map(str, near))}")
    if problems:
        raise ValueError("bad video size: " + "; ".join(problems))


class CausalConv3d(nn.Module):
    """3D convolution that only looks back in time. (B, Cin, T, H, W) -> (B, Cout, T', H', W').

    Time: k-1 copies of the first frame go in front and nothing behind, so output frame t sees input
    frames <= t*stride. Copying frame 0 (rather than zeros) makes a still image look like a video that was
    always still. Space: ordinary symmetric zero padding. With stride 2 in time, T = 1 + 2n -> 1 + n:
    output j sees frames 2j-2..2j, and output 0 sees frame 0 alone (it is padded with itself).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride=(1, 1, 1)):
        super().__init__()
        self.time_pad = kernel_size - 1
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=(0, kernel_size // 2, kernel_size // 2))

    def forward(self, x):
        if self.time_pad:
            first = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)  # (B, C, k-1, H, W)
            x = torch.cat([first, x], dim=2)
        return self.conv(x)


class FrameNorm(nn.GroupNorm):
    """GroupNorm of each frame on its own. (B, C, T, H, W) -> same.

    Plain GroupNorm on a video averages over time too, which would leak future frames into frame 0's
    statistics and break causality.
    """

    def __init__(self, channels: int):
        # At least 8 channels per group: with one channel per group (instance norm) every channel is
        # rescaled on its own, which erases the ratios between channels, i.e. colour. (gcd: groups must
        # divide the channels, e.g. 50 channels -> 2 groups of 25.)
        super().__init__(math.gcd(channels, max(1, channels // 8)), channels)

    def forward(self, x):
        t = x.shape[2]
        x = super().forward(rearrange(x, "b c t h w -> (b t) c h w"))
        return rearrange(x, "(b t) c h w -> b c t h w", t=t)


class ResBlock(nn.Module):
    """x + conv(silu(norm(conv(silu(norm(x)))))). (B, Cin, T, H, W) -> (B, Cout, T, H, W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.net = nn.Sequential(
            FrameNorm(in_channels), nn.SiLU(), CausalConv3d(in_channels, out_channels),
            FrameNorm(out_channels), nn.SiLU(), CausalConv3d(out_channels, out_channels),
        )
        # Start every block as the identity, so a deep stack passes its input through from step 0.
        nn.init.zeros_(self.net[-1].conv.weight)
        nn.init.zeros_(self.net[-1].conv.bias)
        self.skip = nn.Conv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x):
        return self.skip(x) + self.net(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x in space (and causally in time), then a conv. (B, Cin, T, H, W) -> (B, Cout, T2, 2H, 2W).

    In time every frame is repeated twice and the first copy of frame 0 dropped: T -> 1 + 2(T-1), so frame
    0 stays alone and frame j lands on 2j-1 and 2j, mirroring the encoder's stride-2 causal conv.
    """

    def __init__(self, in_channels: int, out_channels: int, time: bool):
        super().__init__()
        self.time = time
        self.conv = CausalConv3d(in_channels, out_channels)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=(2 if self.time else 1, 2, 2), mode="nearest")
        if self.time:
            x = x[:, :, 1:]
        return self.conv(x)


class Encoder(nn.Module):
    """(B, 3, T, H, W) -> (B, 2C, T', H', W'): latent mean and log-variance, stacked on channels.

    conv in; per level: ResBlock(s), then a strided causal conv that halves space (all levels but the
    last) and time (the first `time_downsamples` levels); a middle ResBlock; norm, SiLU, conv out.
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mults]
        ch = widths[0]
        layers = [CausalConv3d(cfg.in_channels, ch)]
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(ch, width))
                ch = width
            if level < len(widths) - 1:
                layers.append(CausalConv3d(ch, ch, stride=(2 if level < cfg.time_downsamples else 1, 2, 2)))
        layers += [ResBlock(ch, ch), FrameNorm(ch), nn.SiLU(), CausalConv3d(ch, 2 * cfg.latent_channels)]
        self.net = nn.Sequential(*layers)

    def forward(self, video):
        return self.net(video)


class Decoder(nn.Module):
    """(B, C, T', H', W') -> (B, 3, T, H, W): the encoder in reverse, with Upsample for the strided convs."""

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = [cfg.base_channels * m for m in cfg.channel_mults]
        ch = widths[-1]
        layers = [CausalConv3d(cfg.latent_channels, ch), ResBlock(ch, ch)]
        for level in reversed(range(len(widths))):
            for _ in range(cfg.num_res_blocks):
                layers.append(ResBlock(ch, widths[level]))
                ch = widths[level]
            # Undo the encoder's downsample after level - 1, narrowing to that level's width as we go: the
            # convs at the next, bigger resolution are the costly ones, so they should be the narrow ones.
            if level > 0:
                layers.append(Upsample(ch, widths[level - 1], time=level - 1 < cfg.time_downsamples))
                ch = widths[level - 1]
        layers += [FrameNorm(ch), nn.SiLU(), CausalConv3d(ch, cfg.in_channels)]
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z)


class VideoVAE(nn.Module):
    """Causal video VAE with a normalised latent for the diffusion model.

    encode/decode work in the VAE's raw latent; encode_latent/decode_latent add the per-channel
    shift/scale (set by `calibrate`) so the latent the DiT sees has about zero mean and unit variance.
    """

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        if cfg.time_downsamples > len(cfg.channel_mults) - 1:
            raise ValueError(f"time_downsamples={cfg.time_downsamples} needs at least {cfg.time_downsamples + 1} "
                             f"entries in channel_mults (time is halved together with space), got {cfg.channel_mults}")
        if not cfg.object_weight > 0:
            raise ValueError(f"object_weight must be > 0 (1 = plain MSE, 5 = the tiny recipe), got {cfg.object_weight}")
        self.cfg = cfg
        self.spatial_factor = cfg.spatial_factor
        self.temporal_factor = cfg.temporal_factor
        self.latent_channels = cfg.latent_channels
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        # Start with a small posterior variance: with logvar = 0 the sampled latent is mostly noise and
        # the decoder first learns to ignore it (grey blurs) before colour and shape get through.
        nn.init.constant_(self.encoder.net[-1].conv.bias[cfg.latent_channels:], -8.0)
        # Buffers, not constants: they are saved in the state_dict (and so in safetensors files), so a
        # loaded model normalises its latents exactly as it did in training.
        self.register_buffer("latent_shift", torch.zeros(cfg.latent_channels))
        self.register_buffer("latent_scale", torch.ones(cfg.latent_channels))

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T', H', W') of the latent of a (num_frames, height, width) video; ValueError if it does not fit."""
        check_video_size(num_frames, height, width, self.temporal_factor, self.spatial_factor)
        return (self.latent_channels, 1 + (num_frames - 1) // self.temporal_factor,
                height // self.spatial_factor, width // self.spatial_factor)

    def encode(self, video):
        """video (B, 3, T, H, W) in [-1, 1] -> (mean, logvar), each (B, C, T', H', W')."""
        self._check_video(video)
        mean, logvar = self.encoder(video).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)  # keeps exp(logvar) finite early in training

    def decode(self, z):
        """z (B, C, T', H', W') -> video (B, 3, 1 + (T'-1)*tf, H'*sf, W'*sf), roughly in [-1, 1]."""
        if not torch.is_tensor(z) or z.ndim != 5 or z.shape[1] != self.latent_channels:
            shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
            raise ValueError(f"decode expects a latent of shape (B, {self.latent_channels}, T', H', W'), got {shape}")
        return self.decoder(z)

    def forward(self, video, sample: bool = True, generator=None) -> dict:
        """Encode, draw z = mean + std * noise (or take the mean if sample=False), decode.

        Returns dict(recon (B, 3, T, H, W), mean, logvar). `generator` makes the noise reproducible.
        """
        mean, logvar = self.encode(video)
        z = mean
        if sample:  # the reparameterisation trick: gradients flow through mean and logvar
            device = generator.device if generator is not None else mean.device
            noise = torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype).to(mean.device)
            z = mean + noise * torch.exp(0.5 * logvar)
        return {"recon": self.decode(z), "mean": mean, "logvar": logvar}

    def loss(self, video, generator=None) -> dict:
        """dict(loss, recon_loss, kl) for a batch (B, 3, T, H, W); loss = recon_loss + kl_weight * kl.

        recon_loss is the squared error per pixel value, weighted by `pixel_weights` (object pixels count
        `object_weight` times); kl is KL(q(z|video) || N(0, I)) per latent element. Its weight is tiny: it only keeps the latent from drifting; `calibrate` does the real scaling.
        """
        out = self(video, generator=generator)
        error = (out["recon"] - video).pow(2)  # (B, 3, T, H, W)
        recon_loss = (error * self.pixel_weights(video)).mean()
        mean, logvar = out["mean"], out["logvar"]
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        return {"loss": recon_loss + self.cfg.kl_weight * kl, "recon_loss": recon_loss, "kl": kl}

    @torch.no_grad()
    def pixel_weights(self, video):
        """(B, 3, T, H, W) -> (B, 1, T, H, W): `object_weight` where a pixel is foreground, 1 elsewhere.

        Why: a small object covers ~1% of a 32x32 frame, so with plain MSE the cheapest first answer is
        "draw the background", and the loss sits on that plateau for hundreds of steps while small
        objects fade away. Foreground = more than 0.1 away (on [-1, 1]) from the video's median colour in
        some channel: in the shapes world the median is the background; elsewhere it is a cheap,
        dataset-free guess of "what is not the backdrop". Measured on the tiny preset: see notebook 02.
        """
        if self.cfg.object_weight == 1:
            return torch.ones_like(video[:, :1])
        backdrop = video.flatten(2).median(dim=2).values[:, :, None, None, None]  # (B, 3, 1, 1, 1)
        foreground = (video - backdrop).abs().amax(dim=1, keepdim=True) > 0.1  # (B, 1, T, H, W)
        return 1 + (self.cfg.object_weight - 1) * foreground.to(video.dtype)

    @torch.no_grad()
    def calibrate(self, videos) -> tuple[torch.Tensor, torch.Tensor]:
        """Set latent_shift / latent_scale to the per-channel mean / std of the encoder means over `videos`.

        videos: a (B, 3, T, H, W) tensor, or an iterable of such batches (or of dataset batches, dicts with a
        "video" entry, e.g. a DataLoader). Returns (latent_shift, latent_scale), each (C,).
        """
        batches = [videos] if torch.is_tensor(videos) else videos
        count, total, total_sq = 0, 0.0, 0.0
        for video in batches:
            video = video["video"] if isinstance(video, dict) else video
            mean, _ = self.encode(video.to(self.latent_shift.device))
            m = rearrange(mean, "b c t h w -> c (b t h w)").double()  # float64: sums of many squares
            count += m.shape[1]
            total = total + m.sum(dim=1)
            total_sq = total_sq + m.pow(2).sum(dim=1)
        if count == 0:
            raise ValueError("calibrate got no videos: pass a (B, 3, T, H, W) tensor or an iterable of batches")
        shift = total / count
        scale = (total_sq / count - shift.pow(2)).clamp_min(1e-12).sqrt()
        self.latent_shift.copy_(shift)
        self.latent_scale.copy_(scale)
        return self.latent_shift.clone(), self.latent_scale.clone()

    def encode_latent(self, video):
        """video (B, 3, T, H, W) -> normalised z0 (B, C, T', H', W'): the mean (deterministic), shifted and scaled."""
        mean, _ = self.encode(video)
        return (mean - self._channel(self.latent_shift)) / self._channel(self.latent_scale)

    def decode_latent(self, z0):
        """Normalised z0 (B, C, T', H', W') -> video (B, 3, T, H, W): undoes the scaling, then decodes."""
        return self.decode(z0 * self._channel(self.latent_scale) + self._channel(self.latent_shift))

    @staticmethod
    def _channel(buffer):
        return rearrange(buffer, "c -> 1 c 1 1 1")

    def _check_video(self, video) -> None:
        """ValueError that says what to change when `video` is not a float (B, 3, T, H, W) batch of a valid size."""
        if not torch.is_tensor(video):
            raise ValueError(f"expected a torch tensor (B, 3, T, H, W), got {type(video).__name__}; "
                             "a numpy (T, H, W, 3) uint8 video v needs "
                             "torch.from_numpy(v).permute(3, 0, 1, 2)[None].float() / 127.5 - 1")
        shape = tuple(video.shape)
        if video.ndim != 5:
            raise ValueError(f"expected a batch of videos (B, 3, T, H, W), got shape {shape}; one video (3, T, H, W) "
                             f"needs video[None], a batch of images (B, 3, H, W) needs video[:, :, None]")
        if shape[1] != self.cfg.in_channels:
            raise ValueError(f"expected {self.cfg.in_channels} channels in dim 1 of (B, 3, T, H, W), got shape "
                             f"{shape}; channels-last videos need einops.rearrange(video, 'b t h w c -> b c t h w')")
        if not video.is_floating_point():
            raise ValueError(f"expected a float video in [-1, 1], got dtype {video.dtype}; "
                             f"for uint8 use video.float() / 127.5 - 1")
        check_video_size(shape[2], shape[3], shape[4], self.temporal_factor, self.spatial_factor)
