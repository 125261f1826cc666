"""The types every course dataset yields: one :class:`Example`, a stacked :class:`Batch`."""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["Example", "Batch", "collate", "BatchRendered"]


class Example(NamedTuple):
    audio: Tensor              # (1, T) float32 in [-1, 1]
    label: int                 # index into the dataset's .classes
    caption: str
    attributes: dict[str, Any]


class Batch(NamedTuple):
    audio: Tensor              # (B, 1, T)
    label: Tensor              # (B,) int64
    caption: list[str]
    attributes: list[dict[str, Any]]


def collate(examples: Sequence[Example]) -> Batch:
    """Stack Examples into a Batch; use as ``DataLoader(..., collate_fn=collate)``."""
    lengths = {ex.audio.shape[-1] for ex in examples}
    if len(lengths) > 1:
        raise ValueError(f"Cannot stack clips of different lengths {sorted(lengths)}; give the dataset a fixed "
                         f"`duration` (e.g. fsdd(..., duration=1.0)).")
    return Batch(torch.stack([ex.audio for ex in examples]), torch.tensor([ex.label for ex in examples]),
                 [ex.caption for ex in examples], [ex.attributes for ex in examples])


class BatchRendered(Dataset):
    """A dataset that renders whole batches at once.

    A subclass defines ``_render(indices, with_captions) -> (audio (B, T) float32 numpy, labels,
    attributes, captions)``; ``batch``, ``examples``, ``ds[i]`` and a DataLoader (torch >= 2.1 asks
    ``__getitems__`` for a whole batch) all go through that one vectorized path.
    """

    size: int

    @staticmethod
    def _checked_size(size: int) -> int:
        if int(size) != size or size < 1:
            raise ValueError(f"size must be positive (a whole number of clips), got {size!r}.")
        return int(size)

    def __len__(self) -> int:
        return self.size

    def _render(self, indices: Sequence[int], with_captions: bool) -> tuple[Any, list[int], list[dict], list[str]]:
        raise NotImplementedError

    def batch(self, indices: Sequence[int]) -> Tensor:
        """Fast path: audio only, (B, 1, T) float32, rendered together (identical to ``ds[i].audio``)."""
        return torch.from_numpy(self._render(indices, False)[0][:, None])

    def examples(self, indices: Sequence[int]) -> Batch:
        """A whole Batch (audio (B, 1, T), labels, captions, attributes) rendered together."""
        audio, labels, attrs, caps = self._render(indices, True)
        return Batch(torch.from_numpy(audio[:, None]), torch.tensor(labels, dtype=torch.long), caps, attrs)

    def __getitems__(self, indices: Sequence[int]) -> list[Example]:
        b = self.examples(indices)
        return [Example(b.audio[k], int(b.label[k]), b.caption[k], b.attributes[k]) for k in range(len(indices))]

    def __getitem__(self, i: int) -> Example:
        return self.__getitems__([i])[0]
