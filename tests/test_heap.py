"""Freezing what lives as long as the daemon out of the collector's walks."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from batond.runtime.heap import LongLivedHeap


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # other tests' garbage stays collectable


def test_series_growth_freezes_the_heap_and_little_growth_does_not(unfrozen: None) -> None:
    held = [0]
    heap = LongLivedHeap(lambda: held[0], every=100)
    kept = [[i] for i in range(500)]  # tracked objects that outlive the check
    held[0] = 99
    assert heap.settle() is False and gc.get_freeze_count() == 0
    held[0] = 100
    assert heap.settle() is True and gc.get_freeze_count() >= len(kept)
    frozen = gc.get_freeze_count()
    held[0] = 150
    assert heap.settle() is False and gc.get_freeze_count() == frozen
    assert heap.freezes == 1


def test_fewer_series_count_from_the_new_size(unfrozen: None) -> None:
    held = [500]
    heap = LongLivedHeap(lambda: held[0], every=100)
    held[0] = 200  # refused or forgotten series
    assert heap.settle() is False
    held[0] = 300
    assert heap.settle() is True and heap.freezes == 1
