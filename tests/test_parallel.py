"""Episodes in contiguous blocks over worker processes (the evaluator's and OPD's rollouts)."""

from __future__ import annotations

from functools import partial

import pytest

from vla_kd.parallel import contiguous_blocks, map_blocks


def test_blocks_keep_order_cover_every_item_and_never_come_empty():
    assert contiguous_blocks(range(5), 2) == [[0, 1, 2], [3, 4]]
    assert contiguous_blocks([7, 8], 4) == [[7], [8]]  # no more blocks than items
    assert contiguous_blocks(range(3), 1) == [[0, 1, 2]]


def tagged(offset: int, block: list, index: int) -> list:
    return [(index, item + offset) for item in block]


def test_map_blocks_gives_the_same_results_in_this_process_and_in_workers():
    work = partial(tagged, 10)
    local = map_blocks(work, range(4), workers=1)
    assert local == [[(0, 10), (0, 11), (0, 12), (0, 13)]]
    pooled = map_blocks(work, range(4), workers=2)
    assert pooled == [[(0, 10), (0, 11)], [(1, 12), (1, 13)]]


def test_an_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="unknown engine 'dask'"):
        map_blocks(partial(tagged, 0), range(2), workers=2, engine="dask")
