"""MiniSora: the whole text-to-video model in one object.

    prompt --Tokenizer--> ids --TextEncoder--> context (B, L, Dtxt)
    noise (B, C, T', H', W') --DiT + rectified-flow sampler--> z0 --VideoVAE.decode--> video (T, H, W, 3)

The recipe of Sora ("Video generation models as world simulators", OpenAI 2024): a diffusion
transformer (arXiv:2212.09748) on spacetime patches of a compressed latent video, as latent diffusion
(arXiv:2112.10752) does for images. `MiniSora` owns the four parts (tokenizer, text encoder, VAE, DiT)
and the config they were built from, and converts between their formats: prompts -> context
(`encode_prompts`), pixels <-> latents (`pixels_to_latent`, `latent_to_pixels`). It is an `nn.Module`,
so `.to(device)`, `.state_dict()` and friends work as usual, and it saves to a folder that holds only
JSON and safetensors (nothing is ever unpickled):

    model = MiniSora.from_preset("tiny")          # untrained, sizes from config.get_preset("tiny")
    video = model.generate("a red circle moves to the right", seed=0)   # (T, H, W, 3) uint8
    model.save_pretrained("my_model");  model = MiniSora.from_pretrained("my_model")

How it is sampled lives apart, as functions that take the model: text-to-video in sampling.py, the
other prompting modes (image-to-video, extension, connecting, loops, editing, long videos) in
prompting.py. `model.generate(...)`, `model.extend(...)` ... are those functions, attached as methods.
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

from . import prompting, sampling
from .config import MiniSoraConfig, get_preset
from .dit import DiT
from .frames import to_model, to_uint8
from .text import TextEncoder, Tokenizer
from .vae import VideoVAE, check_video_size
from .world import split_words, vocabulary

FORMAT_VERSION = 2
# Why older folders cannot be read: what changed in the weights at each version.
FORMAT_CHANGES = {1: "the text encoder now adds each word's own normalised embedding to its output (a new "
                     "LayerNorm, text_encoder.word_norm; minisora/text.py says why)"}
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


class MiniSora(nn.Module):
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
        ids, context_mask = self.tokenizer.encode(prompts, self.config.text.max_len)
        ids, context_mask = ids.to(self.device), context_mask.to(self.device)
        return self.text_encoder(ids, context_mask), context_mask

    # ---------------------------------------------------------------- latents <-> pixels
    @torch.no_grad()
    def pixels_to_latent(self, video: np.ndarray) -> torch.Tensor:
        """Pixels (T, H, W, 3) uint8 -> normalised latent z0 (1, C, T', H', W') on the model's device."""
        return self.vae.encode_latent(to_model(video, self.device))

    @torch.no_grad()
    def latent_to_pixels(self, z0: torch.Tensor) -> np.ndarray:
        """Normalised latent z0 (1, C, T', H', W') -> pixels (T, H, W, 3) uint8."""
        return to_uint8(self.vae.decode_latent(z0)[0])

    # ---------------------------------------------------------------- prompting modes
    # The functions of sampling.py and prompting.py, attached as methods: `model.generate(prompt)` runs
    # `sampling.generate(model, prompt)` itself (same signature, same docstring), nothing in between.
    generate = sampling.generate
    generate_image = sampling.generate_image
    animate = prompting.animate
    extend = prompting.extend
    connect = prompting.connect
    loop = prompting.loop
    edit = prompting.edit
    generate_long = prompting.generate_long

    # ---------------------------------------------------------------- saving and loading
    def save_pretrained(self, directory: str | os.PathLike, card_notes: list[str] | None = None) -> Path:
        """Write config.json, tokenizer.json, model.safetensors and a README.md model card.

        `card_notes` are extra markdown lines for the model card (training time, evaluator scores).

        Files are written into a temporary folder that replaces `directory` only when complete. Replacing
        a folder takes two renames (the old one aside, the new one in): an exception between them puts the
        old one back, and a process killed between them leaves it at `.{name}.old`, where the next save
        and `from_pretrained` find it. So an interrupted save leaves the previous model loadable.
        """
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        old = _aside(directory)
        if old.is_dir() and not directory.exists():  # a save was killed between its two renames
            old.rename(directory)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        config = {"format_version": FORMAT_VERSION, **self.config.to_dict()}
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "tokenizer.json").write_text(json.dumps(self.tokenizer.to_dict()))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "minisora": str(FORMAT_VERSION)})
        (tmp / "README.md").write_text(self.model_card(card_notes))
        if directory.exists():
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
            try:
                tmp.rename(directory)
            except BaseException:  # KeyboardInterrupt included: the previous model goes back in place
                old.rename(directory)
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(directory)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> "MiniSora":
        """Load a folder written by `save_pretrained`. Only JSON and safetensors are read."""
        directory = Path(directory)
        if not directory.is_dir() and _aside(directory).is_dir():  # a save was killed between its renames
            directory = _aside(directory)
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
            why = f": since it was saved, {FORMAT_CHANGES[version]}. Train it again" if version in FORMAT_CHANGES else ""
            raise ValueError(f"'{directory}' has format_version {version}, this minisora reads {FORMAT_VERSION}{why}")
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


def _aside(directory: Path) -> Path:
    """Where save_pretrained keeps the previous model while it moves the new one in."""
    return directory.with_name(f".{directory.name}.old")


def _provenance_card() -> list[str]:
    """The model card's section on misuse and provenance (see minisora.provenance)."""
    return ["", "## Misuse and provenance", "",
            "Its videos are AI-generated and must not be passed off as real. Every file minisora writes from this "
            "model (GIF, MP4, PNG: the CLI, `provenance.save`, the studio's `save`) carries a provenance record: "
            "generator and version, the sha256 of these weights, prompt, seed, steps, guidance, mode, UTC time "
            "and the words \"AI-generated\". With `pip install minisora[provenance]` it is a signed C2PA "
            "manifest (digital source type `trainedAlgorithmicMedia`), as on Sora's videos; check a file with "
            "`python -m minisora provenance FILE`."]
