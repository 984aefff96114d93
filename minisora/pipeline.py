"""MiniSora: the whole text-to-video model in one object.

    prompt --Tokenizer--> ids --TextEncoder--> context (B, L, Dtxt)
    noise (B, C, T', H', W') --DiT + rectified-flow sampler--> z0 --VideoVAE.decode--> video (T, H, W, 3)

`MiniSora` owns the four parts (tokenizer, text encoder, VAE, DiT) and the config they were built from.
It is an `nn.Module`, so `.to(device)`, `.state_dict()` and friends work as usual, and it saves to a
folder that holds only JSON and safetensors (nothing is ever unpickled):

    model = MiniSora.from_preset("tiny")          # untrained, sizes from config.get_preset("tiny")
    video = model.generate("a red circle moves to the right", seed=0)   # (T, H, W, 3) uint8
    model.save_pretrained("my_model");  model = MiniSora.from_pretrained("my_model")

Sora's other prompting modes (image-to-video, extension, connecting, loops, editing, long videos)
live in prompting.py; `MiniSora` inherits them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from . import flow
from .config import MiniSoraConfig, get_preset
from .dit import DiT
from .prompting import PromptingMixin
from .text import TextEncoder, Tokenizer, split_words
from .vae import VideoVAE, check_video_size
from .viz import to_uint8
from .world import vocabulary

FORMAT_VERSION = 1
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


class MiniSora(PromptingMixin, nn.Module):
    """Tokenizer + text encoder + video VAE + diffusion transformer, with sampling and (de)serialisation."""

    def __init__(self, config: MiniSoraConfig, tokenizer: Tokenizer):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.vae = VideoVAE(config.vae)
        self.text_encoder = TextEncoder(config.text, tokenizer.vocab_size)
        self.dit = DiT(config.dit, config.vae.latent_channels, config.text.dim)

    @classmethod
    def from_preset(cls, name: str = "tiny", tokenizer: Tokenizer | None = None) -> "MiniSora":
        """An untrained model of a named preset; the tokenizer defaults to the shapes world's vocabulary."""
        return cls(get_preset(name), tokenizer or Tokenizer.from_words(vocabulary()))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---------------------------------------------------------------- sizes and prompts
    def check_size(self, num_frames: int, height: int, width: int) -> None:
        """Raise a ValueError naming valid values if this video size does not fit the VAE and patch grid."""
        check_video_size(num_frames, height, width, self.vae.temporal_factor, self.vae.spatial_factor,
                         self.config.dit.patch_size)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, T', H', W') of the latent for a video of this size (after checking the size fits)."""
        self.check_size(num_frames, height, width)
        return self.vae.latent_shape(num_frames, height, width)

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (context (B, L, Dtxt), context_mask (B, L) bool). Refuses prompts the model cannot read."""
        for prompt in prompts:
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError("the prompt is empty: describe the video, e.g. 'a red circle moves to the right'")
            unknown = self.tokenizer.unknown_words(prompt)
            if unknown and set(split_words(prompt)) <= set(unknown):
                sample = ", ".join(self.tokenizer.vocab[2:14])
                raise ValueError(f"no word of the prompt {prompt!r} is in this model's vocabulary "
                                 f"(unknown: {', '.join(unknown)}); use words it was trained on, such as: {sample}")
        ids, mask = self.tokenizer.encode(prompts, self.config.text.max_len)
        ids, mask = ids.to(self.device), mask.to(self.device)
        return self.text_encoder(ids, mask), mask

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample_latents(self, prompts: list[str], num_frames: int, height: int, width: int, *, steps: int,
                       guidance: float, seed: int, sampler: str, cond: torch.Tensor | None = None,
                       cond_mask: torch.Tensor | None = None, z_init: torch.Tensor | None = None,
                       t_start: float = 1.0, callback=None, progress: bool = True) -> torch.Tensor:
        """The shared engine of every prompting mode: denoise (B, C, T', H', W') latents from noise.

        `cond`/`cond_mask` give clean latent frames to keep (image-to-video, extension, connecting);
        `z_init` with `t_start < 1` starts from a partly noised video (SDEdit). Noise comes from a CPU
        generator seeded with `seed`, so a seed gives the same video on the same device.
        `prompts=[None]` samples without text (the unconditional velocity that text dropout trained).
        """
        shape = self.latent_shape(num_frames, height, width)
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn((len(prompts), *shape), generator=generator).to(self.device)
        if prompts == [None]:  # no text: the DiT reads only its learned null token, as in text dropout
            context = torch.zeros(1, 1, self.config.text.dim, device=self.device)
            context_mask, guidance = torch.zeros(1, 1, dtype=torch.bool, device=self.device), 1.0
        else:
            context, context_mask = self.encode_prompts(prompts)
        velocity_fn = flow.guided_velocity(self.dit, context, context_mask, guidance)
        num_tokens = int(np.prod([s // p for s, p in zip(shape[1:], self.config.dit.patch_size)]))
        shift = flow.resolution_shift(self.config.flow.shift, num_tokens, self.config.flow.base_tokens)

        return flow.sample(velocity_fn, noise, steps, sampler=sampler, shift=shift, cond=cond,
                           cond_mask=cond_mask, z_init=z_init, t_start=t_start, callback=callback,
                           progress=progress)

    @torch.no_grad()
    def generate(self, prompt: str, num_frames: int | None = None, height: int | None = None,
                 width: int | None = None, steps: int | None = None, guidance: float | None = None,
                 seed: int = 0, sampler: str | None = None, callback=None, progress: bool = True) -> np.ndarray:
        """Text-to-video. Returns (T, H, W, 3) uint8. Sizes default to the training size of the preset.

        callback(step, t, zt, z0_pred) is called at every sampling step with latents (for scrubbing).
        """
        data, flow_cfg = self.config.data, self.config.flow
        num_frames = data.num_frames if num_frames is None else num_frames
        height, width = data.height if height is None else height, data.width if width is None else width
        self.eval()
        z0 = self.sample_latents([prompt], num_frames, height, width,
                                 steps=flow_cfg.steps if steps is None else steps,
                                 guidance=flow_cfg.guidance if guidance is None else guidance, seed=seed,
                                 sampler=sampler or flow_cfg.sampler, callback=callback, progress=progress)
        return to_uint8(self.vae.decode_latent(z0)[0])

    @torch.no_grad()
    def generate_image(self, prompt: str, height: int | None = None, width: int | None = None,
                       **options) -> np.ndarray:
        """Text-to-image: a one-frame video. Returns (H, W, 3) uint8.

        The causal VAE encodes frame 0 on its own, so an image is simply a video of one frame and the
        same weights make both. `options` are generate's: steps, guidance, seed, sampler, progress.

            image = model.generate_image("a large blue square", height=32, width=64, seed=0)  # (32, 64, 3)
        """
        return self.generate(prompt, num_frames=1, height=height, width=width, **options)[0]

    # ---------------------------------------------------------------- saving and loading
    def save_pretrained(self, directory: str | os.PathLike, card_notes: list[str] | None = None) -> Path:
        """Write config.json, tokenizer.json, model.safetensors and a README.md model card.

        `card_notes` are extra markdown lines for the model card (training time, evaluator scores).

        Files are written into a temporary folder that replaces `directory` only when complete, so an
        interrupted save leaves the previous model intact.
        """
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        config = {"format_version": FORMAT_VERSION, **self.config.to_dict()}
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "tokenizer.json").write_text(json.dumps(self.tokenizer.to_dict()))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "minisora": str(FORMAT_VERSION)})
        (tmp / "README.md").write_text(self.model_card(card_notes))
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
            tmp.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "MiniSora":
        """Load a folder written by `save_pretrained`. Only JSON and safetensors are read."""
        directory = Path(directory)
        if not directory.is_dir():
            raise FileNotFoundError(f"no model folder at '{directory}': train one with `python -m minisora "
                                    f"demo` (writes outputs/demo/model) or pass the folder save_pretrained wrote")
        pickles = [p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES]
        if pickles and not (directory / "model.safetensors").exists():
            raise ValueError(f"'{directory}' holds pickle checkpoints ({', '.join(pickles)}); minisora never "
                             f"unpickles files (they can run code). Load it in trusted code and re-save with "
                             f"safetensors.torch.save_file, or use a folder written by save_pretrained")
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            if not (directory / name).exists():
                raise FileNotFoundError(f"'{directory}' is missing {name}; is it a folder written by "
                                        f"MiniSora.save_pretrained?")
        try:
            config_dict = json.loads((directory / "config.json").read_text())
            tokenizer = Tokenizer.from_dict(json.loads((directory / "tokenizer.json").read_text()))
        except json.JSONDecodeError as err:
            raise ValueError(f"'{directory}' has a corrupt JSON file ({err}); re-save the model") from err
        version = config_dict.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise ValueError(f"'{directory}' has format_version {version}, this minisora reads {FORMAT_VERSION}")
        model = cls(MiniSoraConfig.from_dict(config_dict), tokenizer)
        try:
            state = load_file(str(directory / "model.safetensors"))
        except (SafetensorError, OSError, RuntimeError) as err:
            raise ValueError(f"'{directory / 'model.safetensors'}' is truncated or corrupt ({err}); "
                             f"re-save or re-download the model") from err
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"the weights in '{directory}' do not fit its config.json (saved from another "
                             f"config or edited by hand): {str(err).splitlines()[0]}") from err
        return model.to(device).eval()

    def num_params(self) -> dict[str, int]:
        """Parameter counts per part."""
        return {name: sum(p.numel() for p in part.parameters())
                for name, part in [("vae", self.vae), ("text_encoder", self.text_encoder), ("dit", self.dit)]}

    def model_card(self, notes: list[str] | None = None) -> str:
        """A short README.md describing the model: what it is, its sizes, how to load it."""
        c = self.config
        counts = self.num_params()
        lines = [
            f"# minisora model ({c.name} preset)",
            "",
            "A small text-to-video diffusion transformer trained with minisora.",
            "",
            f"- videos: {c.data.num_frames} frames of {c.data.height}x{c.data.width}, dataset `{c.data.dataset}`",
            f"- VAE: {counts['vae']:,} parameters, {c.vae.temporal_factor}x time / {c.vae.spatial_factor}x "
            f"space compression, {c.vae.latent_channels} latent channels",
            f"- text encoder: {counts['text_encoder']:,} parameters, vocabulary of {self.tokenizer.vocab_size} words",
            f"- DiT: {counts['dit']:,} parameters, {c.dit.depth} blocks of width {c.dit.dim}, patch {c.dit.patch_size}",
            "",
            "```python",
            "from minisora import MiniSora",
            "model = MiniSora.from_pretrained('path/to/this/folder')",
            "video = model.generate('a red circle moves to the right', seed=0)  # (T, H, W, 3) uint8",
            "```",
            "",
            "Files: `config.json` (how it was built), `tokenizer.json`, `model.safetensors` (weights, no pickle).",
        ]
        lines += _provenance_card()
        if notes:
            lines += ["", "## Notes", "", *notes]
        return "\n".join(lines) + "\n"


def _provenance_card() -> list[str]:
    """The model card's section on misuse and provenance (see minisora.provenance)."""
    return ["", "## Misuse and provenance", "",
            "Its videos are AI-generated and must not be passed off as real. Every file minisora writes from this "
            "model (GIF, MP4, PNG: the CLI, `provenance.save`, the studio's `save`) carries a provenance record: "
            "generator and version, the sha256 of these weights, prompt, seed, steps, guidance, mode, UTC time "
            "and the words \"AI-generated\". With `pip install minisora[provenance]` it is a signed C2PA "
            "manifest (digital source type `trainedAlgorithmicMedia`), as on Sora's videos; check a file with "
            "`python -m minisora provenance FILE`."]
