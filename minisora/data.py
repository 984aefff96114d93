"""Datasets: every source of training clips speaks one item format.

    item = {"video": (3, T, H, W) float32 in [-1, 1], "caption": str, "truth": {...}}

Only ShapesWorld has "truth" (per-frame ground truth, see minisora.world.simulate). Every dataset
has a `.size` (frames, height, width) and a `.vocabulary()` to build a tokenizer from. Sources:

    ShapesWorld         procedural shapes (minisora.world): the default, exact, nothing to download
    MovingDigits        scikit-learn's bundled 8x8 digits bouncing around a frame (offline), after
                        Moving MNIST (Srivastava et al., arXiv:1502.04681)
    mnist_dataset       the same with MNIST digits, through Hugging Face `datasets` (needs the hub)
    VideoFolder         your own .mp4/.gif clips plus a captions file
    HFVideoDataset      any `datasets.Dataset` of images (1-frame videos) or videos with a caption column
    make_dataset        picks one of these from a DataConfig

Items may come in several sizes; minisora.batching decides which items form each batch.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch.utils.data import Dataset

from . import physics, world
from .config import DataConfig
from .frames import fit_video, read_video

VIDEO_EXTENSIONS = (".mp4", ".gif", ".webm", ".mov", ".avi")


def _check_size(num_frames: int, height: int, width: int) -> None:
    if min(num_frames, height, width) < 1:
        raise ValueError(f"num_frames, height and width must be >= 1, got {(num_frames, height, width)}")


class ShapesWorld(Dataset):
    """Captioned videos of the shapes world; item i depends only on (seed, i), so any worker or rerun agrees.

    Items: {"video": (3, T, H, W) float32 in [-1, 1], "caption": str, "truth": dict} where truth holds
    world.simulate's arrays as tensors with the object axis padded to K = max_objects and
    "present" (K,) bool saying which slots hold an object: position (T, K, 2), velocity (T, K, 2),
    mask (T, K, H, W), visible (T, K), shape/color/size/motion (K,) (-1 when absent), rgb (K, 3),
    radius (K,), gravity (), occluder (2,). Torch's default collate stacks them into batches.
    gravity / occluder=True gives half the videos gravity / a grey bar in front.
    """

    def __init__(self, num_frames: int = 9, height: int = 32, width: int = 32, seed: int = 0,
                 length: int = 10_000, max_objects: int = 2, gravity: bool = False, occluder: bool = False,
                 holdout=(), return_truth: bool = True, collisions: float = 0.0):
        _check_size(num_frames, height, width)
        self.size = (num_frames, height, width)
        self.seed, self.length, self.max_objects = seed, length, max_objects
        self.gravity_prob, self.occluder_prob = 0.5 * gravity, 0.5 * occluder
        self.holdout, self.return_truth = tuple(holdout), return_truth
        self.collision_prob = float(collisions)  # share of videos where one object hits another
        self._scene(0)  # bad max_objects or holdout fail here, not inside a DataLoader worker

    @classmethod
    def from_config(cls, cfg: DataConfig, seed: int = 0, length: int = 10_000, holdout=(),
                    return_truth: bool = True) -> "ShapesWorld":
        return cls(cfg.num_frames, cfg.height, cfg.width, seed=seed, length=length, max_objects=cfg.max_objects,
                   gravity=cfg.gravity, occluder=cfg.occluder, holdout=holdout, return_truth=return_truth,
                   collisions=getattr(cfg, "collisions", 0.0))

    def __len__(self) -> int:
        return self.length

    def _scene(self, i: int) -> tuple[world.Scene, str]:
        rng = np.random.default_rng((self.seed, i))
        scene = world.sample_scene(rng, self.max_objects, self.gravity_prob, self.occluder_prob, self.holdout,
                                   collision_prob=self.collision_prob)
        return scene, world.caption(scene, rng)

    def __getitem__(self, i: int) -> dict:
        if not -self.length <= i < self.length:
            raise IndexError(f"item {i} of a ShapesWorld of length {self.length}")
        scene, text = self._scene(i % self.length)
        clip = world.render(scene, *self.size)
        video = rearrange(torch.from_numpy(clip.video), "t h w c -> c t h w").contiguous().float() / 127.5 - 1
        item = {"video": video, "caption": text}
        if self.return_truth:
            item["truth"] = self._pad(clip.truth)
        return item

    def _pad(self, truth: dict) -> dict:
        """Give every per-object array K = max_objects slots so items of 1..K objects stack in a batch."""
        K, n = self.max_objects, len(truth["radius"])
        out = {"present": torch.arange(K) < n}
        for key, value in truth.items():
            if key == "contacts":  # a variable number of rows: not batched (world.simulate has them)
                continue
            value = torch.from_numpy(np.asarray(value))
            axis = 1 if key in ("position", "velocity", "mask", "visible") else 0
            if key not in ("gravity", "occluder"):
                shape = list(value.shape)
                shape[axis] = K - n
                fill = -1 if key in ("shape", "color", "size", "motion") else 0  # -1: no object here
                value = torch.cat([value, torch.full(shape, fill, dtype=value.dtype)], dim=axis)
            out[key] = value
        return out

    @property
    def captions(self) -> list[str]:
        """The captions of the first 2000 items (cheap: no rendering), e.g. to build a tokenizer."""
        return [self._scene(i)[1] for i in range(min(self.length, 2000))]

    @staticmethod
    def vocabulary() -> list[str]:
        """Every word a caption of the world can hold, sorted (build a tokenizer from it)."""
        return world.vocabulary()


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("MovingDigits needs scikit-learn for its bundled digits: pip install scikit-learn") from error
    digits = load_digits()
    return digits.images / 16.0, digits.target  # (1797, 8, 8) in [0, 1], labels 0..9


class MovingDigits(Dataset):
    """Bouncing digits on black, like Moving MNIST; item i depends only on (seed, i).

    images (N, h, w) in [0, 1] and labels (N,) default to scikit-learn's 1797 bundled 8x8 digits
    (offline). Each clip holds 1..max_digits digits of side digit_size * min(height, width) pixels, each
    moving in one of world.MOTIONS and bouncing off the walls; overlapping digits take the brighter pixel.
    Captions read "the digit 3 moves to the right and the digit 7 stays still".
    Items: {"video": (3, T, H, W) float32 in [-1, 1], "caption": str} (gray video, equal channels).
    """

    def __init__(self, num_frames: int = 9, height: int = 32, width: int = 32, seed: int = 0,
                 length: int = 10_000, max_digits: int = 1, digit_size: float = 0.5,
                 images: np.ndarray | None = None, labels: np.ndarray | None = None):
        _check_size(num_frames, height, width)
        if images is None:
            images, labels = _sklearn_digits()
        if labels is None or len(images) != len(labels):
            raise ValueError("give MovingDigits as many labels as images")
        if max_digits < 1 or not 0 < digit_size <= 1:
            raise ValueError(f"need max_digits >= 1 and 0 < digit_size <= 1, got {max_digits}, {digit_size}")
        self.size = (num_frames, height, width)
        self.seed, self.length, self.max_digits = seed, length, max_digits
        self.images = torch.as_tensor(np.asarray(images), dtype=torch.float32)
        self.labels = np.asarray(labels)
        self.side = max(1, round(digit_size * min(height, width)))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        if not -self.length <= i < self.length:
            raise IndexError(f"item {i} of a MovingDigits of length {self.length}")
        T, H, W = self.size
        rng = np.random.default_rng((self.seed, i % self.length))
        n = int(rng.integers(1, self.max_digits + 1))
        picks = rng.integers(len(self.images), size=n)
        motions = [list(world.MOTIONS)[m] for m in rng.integers(len(world.MOTIONS), size=n)]
        sprites = F.interpolate(self.images[picks][:, None], size=(self.side, self.side), mode="bilinear",
                                antialias=True, align_corners=False)[:, 0].clamp(0, 1)
        half = self.side / 2
        lo, hi = np.full((n, 2), half), np.array([[W - half, H - half]] * n)
        start = lo + rng.random((n, 2)) * np.maximum(hi - lo, 0)
        speed = rng.uniform(*world.SPEED_RANGE, size=(n, 1)) * W
        positions, _ = physics.bounce(start, np.array([world.MOTIONS[m] for m in motions]) * speed, lo, hi, T)
        corners = np.clip(np.rint(positions - half).astype(int), 0, [max(W - self.side, 0), max(H - self.side, 0)])
        frames = torch.zeros(T, H, W)
        for t in range(T):
            for k in range(n):
                x, y = corners[t, k]
                patch = frames[t, y:y + self.side, x:x + self.side]
                patch.copy_(torch.maximum(patch, sprites[k, :patch.shape[0], :patch.shape[1]]))
        text = " and ".join(f"the digit {self.labels[p]} {world.motion_phrase(m, rng)}" for p, m in zip(picks, motions))
        return {"video": (frames * 2 - 1).expand(3, -1, -1, -1).contiguous(), "caption": text}

    @staticmethod
    def vocabulary() -> list[str]:
        """Every word a caption can hold, sorted (build a tokenizer from it)."""
        return sorted(set(world.vocabulary()) | {"the", "digit", *map(str, range(10))})


def mnist_dataset(split: str = "train", **kwargs) -> MovingDigits:
    """MovingDigits with the 28x28 MNIST digits from the Hugging Face hub (kwargs go to MovingDigits).

    Offline (or with HF_DATASETS_OFFLINE=1 and no cached copy) this fails at once with a ConnectionError
    that points to MovingDigits, which needs no download.
    """
    try:
        import datasets

        table = datasets.load_dataset("mnist", split=split)
    except Exception as error:  # no network, no cache, hub down: the remedy is the same
        raise ConnectionError(
            f"could not load MNIST with datasets.load_dataset('mnist') ({type(error).__name__}: {error}). "
            "Offline? Use MovingDigits instead (scikit-learn's bundled digits, no download): "
            "DataConfig(dataset='digits') or minisora.data.MovingDigits()") from error
    images = np.stack([np.asarray(image, dtype=np.float32) for image in table["image"]]) / 255
    return MovingDigits(images=images, labels=np.asarray(table["label"]), **kwargs)


def _read_captions(path: Path) -> list[tuple[str, str]]:
    """(file, caption) rows of a CSV with a `file,caption` header or of JSON lines {"file":..., "caption":...}."""
    with open(path, newline="", encoding="utf-8") as f:
        if path.suffix == ".csv":
            rows = list(csv.DictReader(f))
        else:
            rows = []
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise ValueError(f"{path} line {n} is not JSON: {error}") from error
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not row.get("file") or not (row.get("caption") or "").strip():
            raise ValueError(f"{path} row {n} needs a 'file' and a non-empty 'caption', got {row!r}")
    return [(row["file"], row["caption"].strip()) for row in rows]


class VideoFolder(Dataset):
    """Your own clips: video files in a folder plus a captions file, one item per captions row.

    captions_file (default: captions.csv or captions.jsonl inside root) is either
        CSV with a header:   file,caption
                             dog.mp4,"a dog runs along the beach"
        or JSON lines:       {"file": "dog.mp4", "caption": "a dog runs along the beach"}
    with file paths relative to root. Every video file in root needs a caption. A clip gives its first
    num_frames frames, centre-cropped to the aspect ratio of (height, width) and resized.
    Items: {"video": (3, T, H, W) float32 in [-1, 1], "caption": str}.
    """

    def __init__(self, root: str | Path, captions_file: str | Path | None = None, num_frames: int = 9,
                 height: int = 32, width: int = 32):
        _check_size(num_frames, height, width)
        self.root, self.size = Path(root), (num_frames, height, width)
        if not self.root.is_dir():
            raise FileNotFoundError(f"video folder {self.root} does not exist")
        if captions_file is None:
            found = [self.root / n for n in ("captions.csv", "captions.jsonl") if (self.root / n).is_file()]
            if not found:
                raise FileNotFoundError(f"no captions.csv or captions.jsonl in {self.root}; write one (see "
                                        "VideoFolder's docstring) or pass captions_file=")
            captions_file = found[0]
        captions_file = Path(captions_file)
        if not captions_file.is_file() and (self.root / captions_file).is_file():
            captions_file = self.root / captions_file
        if not captions_file.is_file():
            raise FileNotFoundError(f"captions file {captions_file} does not exist")
        self.items = _read_captions(captions_file)
        missing = [name for name, _ in self.items if not (self.root / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{captions_file} lists files missing from {self.root}: {missing[:5]}")
        listed = {(self.root / name).resolve() for name, _ in self.items}
        uncaptioned = sorted(p.name for p in self.root.iterdir()
                             if p.suffix.lower() in VIDEO_EXTENSIONS and p.resolve() not in listed)
        if uncaptioned:
            raise ValueError(f"videos without a caption in {captions_file}: {uncaptioned[:5]}; add a row for "
                             "each or move them out of the folder")

    def __len__(self) -> int:
        return len(self.items)

    def vocabulary(self) -> list[str]:
        """Every word of the captions file, sorted (build a tokenizer from it)."""
        return sorted({word for _, text in self.items for word in world.split_words(text)})

    def __getitem__(self, i: int) -> dict:
        name, text = self.items[i]
        frames = read_video(self.root / name, self.size[0])
        return {"video": fit_video(frames, *self.size[1:]), "caption": text}


def _to_frames(value) -> np.ndarray:
    """A PIL image, an array or nested lists, or a list of those -> np array (.., H, W[, C])."""
    if hasattr(value, "convert"):  # PIL image, as `datasets` Image columns give them
        return np.asarray(value.convert("RGB"))
    if isinstance(value, (list, tuple)) and value and hasattr(value[0], "convert"):
        return np.stack([np.asarray(v.convert("RGB")) for v in value])
    return np.asarray(value)


class HFVideoDataset(Dataset):
    """Any Hugging Face `datasets.Dataset` with a caption column and an image or a video column.

    image_column: PIL images or arrays (H, W[, C]) -> 1-frame videos (3, 1, H, W).
    video_column: arrays/lists of frames (T, H, W[, C]), lists of PIL images, or paths to video files;
    the first num_frames frames are used. Integer pixels are 0..255, float pixels 0..1.
    Items: {"video": (3, T, height, width) float32 in [-1, 1], "caption": str}.
    """

    def __init__(self, hf_dataset, caption_column: str, video_column: str | None = None,
                 image_column: str | None = None, num_frames: int = 9, height: int = 32, width: int = 32):
        if (video_column is None) == (image_column is None):
            raise ValueError("give exactly one of video_column= (videos) or image_column= (images)")
        _check_size(num_frames, height, width)
        columns = list(hf_dataset.column_names)
        for column in (caption_column, video_column or image_column):
            if column not in columns:
                raise ValueError(f"column {column!r} is not in the dataset; its columns are {columns}")
        self.data, self.caption_column = hf_dataset, caption_column
        self.video_column, self.image_column = video_column, image_column
        self.size = (1 if image_column else num_frames, height, width)

    def __len__(self) -> int:
        return len(self.data)

    def vocabulary(self) -> list[str]:
        """Every word of the caption column, sorted (build a tokenizer from it)."""
        return sorted({word for text in self.data[self.caption_column] for word in world.split_words(str(text))})

    def __getitem__(self, i: int) -> dict:
        row = self.data[i]
        text = row[self.caption_column]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"row {i}: caption column {self.caption_column!r} holds {text!r}, not a caption")
        T = self.size[0]
        if self.image_column:
            frames = _to_frames(row[self.image_column])[None]
        elif isinstance(row[self.video_column], str):
            frames = read_video(row[self.video_column], T)
        else:
            frames = _to_frames(row[self.video_column])
            if len(frames) < T:
                raise ValueError(f"row {i}: video has {len(frames)} frames but num_frames={T}")
            frames = frames[:T]
        return {"video": fit_video(frames, *self.size[1:]), "caption": text.strip()}


def make_dataset(data_cfg: DataConfig, seed: int = 0, length: int = 10_000, holdout=(), **kwargs) -> Dataset:
    """The dataset data_cfg.dataset names, at data_cfg's (num_frames, height, width).

    "shapes" (holdout, return_truth), "digits" and "mnist" (max_digits, digit_size) use seed and length;
    "folder" needs root= (and optionally captions_file=); "hf" needs hf_dataset= and caption_column=
    plus video_column= or image_column=. Keywords left as None are ignored, so a command line can pass
    all of its options whatever the dataset.
    """
    kwargs = {key: value for key, value in kwargs.items() if value is not None}
    size = dict(num_frames=data_cfg.num_frames, height=data_cfg.height, width=data_cfg.width)
    name = data_cfg.dataset
    if name == "shapes":
        return ShapesWorld.from_config(data_cfg, seed=seed, length=length, holdout=holdout, **kwargs)
    if name == "digits":
        return MovingDigits(**size, seed=seed, length=length, **kwargs)
    if name == "mnist":
        return mnist_dataset(**size, seed=seed, length=length, **kwargs)
    if name == "folder":
        if "root" not in kwargs:
            raise ValueError("dataset 'folder' needs root= (a folder of videos with captions.csv/.jsonl)")
        return VideoFolder(**kwargs, **size)
    if name == "hf":
        if "hf_dataset" not in kwargs or "caption_column" not in kwargs:
            raise ValueError("dataset 'hf' needs hf_dataset= (a datasets.Dataset) and caption_column=, plus "
                             "video_column= or image_column=")
        return HFVideoDataset(**kwargs, **size)
    raise ValueError(f"unknown dataset {name!r}; choose one of 'shapes', 'digits', 'mnist', 'folder', 'hf'")
