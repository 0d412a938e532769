"""Prompt and image embedding cache: a second generation with the same prompt and image skips the encoders.

Keys hold the model, the dtype and device the embedding was computed with, and the text or the image's
sha256 plus the crop width (the image embedding depends on it). Values live on the CPU so the cache never
holds GPU memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch


class EmbeddingCache:
    """A small thread-safe LRU of tensors with hit and miss counters."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(
        self, key: Hashable, compute: Callable[[], torch.Tensor], device: torch.device
    ) -> tuple[torch.Tensor, bool]:
        """The cached tensor on ``device`` (or ``compute()``, then cached), and whether it was a hit."""
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
                self.hits += 1
        if cached is not None:
            return cached.to(device), True
        value = compute()
        with self._lock:
            self.misses += 1
            if self.capacity > 0:
                self._items[key] = value.detach().to("cpu", copy=True)
                self._items.move_to_end(key)
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
        return value, False

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
