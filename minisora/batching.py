"""Batch order: which dataset items make up batch number `step`.

Sora trains on videos at their native sizes instead of cropping everything to one square (as NaViT,
arXiv:2307.06304, does for images). A batch still needs one shape, so items are grouped into *buckets*
of one (frames, height, width) and every batch comes from one bucket:

    sizes = item_sizes(dataset)                      # (frames, height, width) per item, nothing rendered
    plan = BatchPlan(sizes, batch_size=8, seed=0)
    plan(step)                                       # the dataset indices of global batch `step`

The order is a function of the step alone (a seeded permutation per epoch), so a resumed run sees the
same batches as a run never stopped. `BucketBatchSampler` is the same bucketing for a DataLoader.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Sampler, Subset


class BucketBatchSampler(Sampler):
    """Batches of indices whose items share one (frames, height, width); pass as DataLoader(batch_sampler=).

    sizes: each item's (frames, height, width), e.g. for a ConcatDataset of parts with a `.size`:
    `[part.size for part in concat.datasets for _ in range(len(part))]`. Each epoch shuffles within
    every bucket and then the order of batches, deterministically from (seed, epoch); call
    set_epoch(epoch) before each epoch for a new order.
    """

    def __init__(self, sizes: Sequence[tuple[int, int, int]], batch_size: int, seed: int = 0,
                 drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.buckets: dict[tuple[int, int, int], list[int]] = {}
        for index, size in enumerate(sizes):
            self.buckets.setdefault(tuple(int(s) for s in size), []).append(index)
        self.batch_size, self.seed, self.drop_last, self.epoch = batch_size, seed, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        batches = []
        for size in sorted(self.buckets):  # sorted: the same order whatever order sizes came in
            order = rng.permutation(self.buckets[size])
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size].tolist()
                if len(batch) == self.batch_size or not self.drop_last:
                    batches.append(batch)
        return [batches[j] for j in rng.permutation(len(batches))]

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:
        full = sum(len(b) // self.batch_size for b in self.buckets.values())
        return full if self.drop_last else sum(-(-len(b) // self.batch_size) for b in self.buckets.values())


def batch_indices(step: int, batch_size: int, length: int, seed: int) -> list[int]:
    """Dataset indices of global batch `step`: consecutive slices of one seeded permutation per epoch."""
    out, position = [], step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(position, length)
        order = torch.randperm(length, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        take = min(batch_size - len(out), length - offset)
        out += order[offset:offset + take].tolist()
        position += take
    return out


def item_sizes(dataset) -> list[tuple[int, int, int]]:
    """(frames, height, width) of every item, read from `.size` (every minisora dataset has one) through
    ConcatDataset and Subset, so nothing is rendered; a dataset without `.size` is taken to be all the
    size of its first item."""
    if isinstance(dataset, ConcatDataset):
        return [size for part in dataset.datasets for size in item_sizes(part)]
    if isinstance(dataset, Subset):
        sizes = item_sizes(dataset.dataset)
        return [sizes[i] for i in dataset.indices]
    size = getattr(dataset, "size", None) or tuple(dataset[0]["video"].shape[1:])
    return [tuple(size)] * len(dataset)


class BatchPlan:
    """Dataset indices of global batch `step`, a function of the step alone (so resume is exact).

    One size: `batch_indices`. Several sizes: every batch is `batch_size` items of one (frames, height,
    width) bucket, from BucketBatchSampler's seeded order for each epoch (drop_last: every batch is
    full, so it splits evenly across processes); buckets take turns in proportion to their items.
    """

    def __init__(self, sizes: list[tuple[int, int, int]], batch_size: int, seed: int):
        self.length, self.batch_size, self.seed = len(sizes), batch_size, seed
        self.sampler = BucketBatchSampler(sizes, batch_size, seed=seed, drop_last=True)
        if len(self.sampler.buckets) > 1:
            small = {size: len(ix) for size, ix in self.sampler.buckets.items() if len(ix) < batch_size}
            if small:
                raise ValueError(f"size buckets {small} (frames, height, width): item count) hold fewer items than "
                                 f"the batch size {batch_size}, so they would never be trained on; add items or "
                                 f"lower the batch size")
        self.epoch_batches: tuple[int, list[list[int]]] | None = None

    def __call__(self, step: int) -> list[int]:
        if len(self.sampler.buckets) == 1:
            return batch_indices(step, self.batch_size, self.length, self.seed)
        epoch, offset = divmod(step, len(self.sampler))
        if self.epoch_batches is None or self.epoch_batches[0] != epoch:  # one epoch's order at a time
            self.sampler.set_epoch(epoch)
            self.epoch_batches = (epoch, list(self.sampler))
        return self.epoch_batches[1][offset]
