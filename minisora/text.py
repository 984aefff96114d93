"""Text conditioning: a word-level tokenizer and a small transformer text encoder.

Sora conditions on rich captions written by a language model (DALL-E 3's re-captioning); large
generators encode them with a big pretrained text model (T5 in Imagen, arXiv:2205.11487). Our world's
captions use a few dozen words ("a small red circle bounces to the left"), so a vocabulary built from the
training captions and a two-layer transformer (arXiv:1706.03762) trained jointly with the DiT are enough,
and every piece stays visible.

    tokenizer = Tokenizer.from_words(dataset.vocabulary())
    ids, context_mask = tokenizer.encode(["a red circle moves left"], max_len=24)  # (B, L) long, (B, L) bool
    context = TextEncoder(cfg.text, tokenizer.vocab_size)(ids, context_mask)      # (B, L, dim)

Words are cut by `world.split_words`, the splitter the evaluator uses too. A word the tokenizer has never
seen becomes `<unk>` and a warning names it: the model cannot know what it means, and silently ignoring
it would hide why a prompt "did nothing".
"""

from __future__ import annotations

import warnings
from typing import Iterable

import torch
from torch import nn

from .config import TextConfig
from .world import split_words

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


class Tokenizer:
    """Maps words to ids. Id 0 is `<pad>`, id 1 is `<unk>`, the rest are the known words.

    Args:
        vocab: the full id -> word list, starting with `<pad>`, `<unk>`. Usually built with
            `from_captions` / `from_words`, or restored with `from_dict`.
    """

    def __init__(self, vocab: list[str]):
        if list(vocab[:2]) != [PAD, UNK] or len(set(vocab)) != len(vocab):
            raise ValueError(f"vocab must start with {PAD!r}, {UNK!r} and hold no duplicates")
        self.vocab = list(vocab)
        self.word_to_id = {word: i for i, word in enumerate(self.vocab)}

    @classmethod
    def from_captions(cls, captions: Iterable[str]) -> "Tokenizer":
        """Vocabulary = every word of every caption, sorted (so the ids do not depend on order)."""
        words = {word for caption in captions for word in split_words(caption)}
        return cls([PAD, UNK] + sorted(words))

    @classmethod
    def from_words(cls, words: Iterable[str]) -> "Tokenizer":
        """Vocabulary from a word list (e.g. `world.vocabulary()`), normalised like prompts are."""
        return cls.from_captions(words)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of `prompt` not in the vocabulary, each once, in order of appearance."""
        return list(dict.fromkeys(w for w in split_words(prompt) if w not in self.word_to_id))

    def encode(self, prompts: list[str] | str, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (ids `(B, max_len)` long, context_mask `(B, max_len)` bool, True = a real word).

        Unknown words become `<unk>` and words beyond `max_len` are cut; each case warns
        (UserWarning) saying which words. An empty prompt gives an all-False mask row.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1, got {max_len}")
        ids = torch.full((len(prompts), max_len), PAD_ID, dtype=torch.long)
        context_mask = torch.zeros(len(prompts), max_len, dtype=torch.bool)
        unknown, truncated = [], []
        for row, prompt in enumerate(prompts):
            words = split_words(prompt)
            if len(words) > max_len:
                truncated.append(f"{prompt!r} ({len(words)} words; dropped {' '.join(words[max_len:])!r})")
                words = words[:max_len]
            unknown += [w for w in dict.fromkeys(words) if w not in self.word_to_id and w not in unknown]
            ids[row, : len(words)] = torch.tensor([self.word_to_id.get(w, UNK_ID) for w in words], dtype=torch.long)
            context_mask[row, : len(words)] = True
        if unknown:
            warnings.warn(f"unknown words {unknown} are not in the tokenizer's {self.vocab_size}-word vocabulary; "
                          f"they become <unk> and the model cannot follow them. Rephrase with known words "
                          f"(see tokenizer.vocab).", UserWarning, stacklevel=2)
        if truncated:
            warnings.warn(f"prompts longer than max_len={max_len} words were cut: {'; '.join(truncated)}",
                          UserWarning, stacklevel=2)
        return ids, context_mask

    def decode(self, ids: torch.Tensor, context_mask: torch.Tensor | None = None) -> list[str]:
        """ids `(B, L)` (and optionally their context_mask) -> one string per row; padding is left out."""
        context_mask = ids != PAD_ID if context_mask is None else context_mask
        return [" ".join(self.vocab[i] for i, keep in zip(row.tolist(), keep_row.tolist()) if keep)
                for row, keep_row in zip(ids, context_mask)]

    def to_dict(self) -> dict:
        """JSON-serialisable form; `Tokenizer.from_dict` restores exactly the same ids."""
        return {"type": "word", "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        if d.get("type") != "word" or not isinstance(d.get("vocab"), list):
            raise ValueError("not a minisora word tokenizer dict: expected keys 'type': 'word' and 'vocab': [...]")
        return cls(d["vocab"])


class TextEncoder(nn.Module):
    """Token + learned position embeddings, a few pre-norm transformer layers, a final LayerNorm; plus
    each word's own embedding, normalised on its own, added to the output.

    Why the second term: without it, training drowned the motion words. Within a few hundred steps
    the DiT learns colour, size and shape first, the encoder's output vectors fill with those, and after
    the final LayerNorm "left" and "right" differed by 2% (colours by 100%), so the DiT never heard
    which way to move (benchmarks/RESULTS.md, "motion words"). A word's own normalised embedding keeps
    every word distinct whatever the rest of the prompt weighs.

    Args:
        cfg: `TextConfig` (dim, depth, heads, max_len).
        vocab_size: `Tokenizer.vocab_size`.
    """

    def __init__(self, cfg: TextConfig, vocab_size: int):
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ValueError(f"text dim {cfg.dim} must be divisible by heads {cfg.heads}")
        self.max_len = cfg.max_len
        self.token_embed = nn.Embedding(vocab_size, cfg.dim)
        self.pos_embed = nn.Parameter(torch.randn(cfg.max_len, cfg.dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(cfg.dim, cfg.heads, dim_feedforward=4 * cfg.dim, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.word_norm = nn.LayerNorm(cfg.dim)
        nn.init.normal_(self.token_embed.weight, std=0.02)

    def forward(self, ids: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """ids `(B, L)` long, context_mask `(B, L)` bool (True = word) -> context `(B, L, dim)`:
        `contextual(ids, context_mask)` plus each word's own normalised embedding.

        Padding positions come out as zeros. A row with no words at all (a dropped or empty prompt)
        comes out as all zeros: the DiT's null token then stands for "no prompt".
        """
        in_prompt = self.contextual(ids, context_mask)  # (B, L, dim), checks the inputs
        alone = self.word_norm(self.token_embed(ids))  # (B, L, dim): what each word is on its own
        return (in_prompt + alone) * context_mask[..., None]

    def contextual(self, ids: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """The transformer's half of the output: each word read in its prompt, `(B, L, dim)` (padding not zeroed)."""
        if ids.dim() != 2 or context_mask.shape != ids.shape or context_mask.dtype != torch.bool:
            raise ValueError(f"expected ids (B, L) and a bool context_mask of the same shape, got "
                             f"{tuple(ids.shape)} and {tuple(context_mask.shape)} {context_mask.dtype}")
        if ids.shape[1] > self.max_len:
            raise ValueError(f"{ids.shape[1]} tokens but the text encoder holds positions for max_len="
                             f"{self.max_len}; encode prompts with max_len <= {self.max_len}")
        x = self.token_embed(ids) + self.pos_embed[: ids.shape[1]]  # (B, L, dim)
        # A row whose keys are all padding would softmax over nothing (NaN). Let such rows attend to
        # their padding instead; their output is zeroed by forward anyway.
        empty = ~context_mask.any(dim=1, keepdim=True)  # (B, 1)
        ignore = ~(context_mask | empty)  # (B, L), True = key to ignore (PyTorch's convention)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=ignore)
        return self.norm(x)
