"""Job ids: unique, time-sortable, strictly increasing within a process."""

from __future__ import annotations

import itertools
import threading
import time

from conveyor.job import new_id


def test_ids_are_unique_and_increase_within_a_process() -> None:
    # When many ids are made in a row
    ids = [new_id() for _ in range(20_000)]
    # Then none repeats and each sorts after the previous one
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(a < b for a, b in itertools.pairwise(ids))


def test_ids_are_fixed_width_lowercase_hex() -> None:
    ids = {new_id() for _ in range(100)}
    assert {len(i) for i in ids} == {26}
    assert all(set(i) <= set("0123456789abcdef") for i in ids)


def test_ids_sort_by_creation_time() -> None:
    # Given an id, then one made a few milliseconds later
    first = new_id()
    time.sleep(0.003)
    later = new_id()
    # Then the later one sorts after, and the leading digits are the creation time in ms
    assert later > first
    ms = int(first[:12], 16)
    assert abs(ms / 1000 - time.time()) < 5


def test_ids_made_on_many_threads_are_unique() -> None:
    # When eight threads make ids at once
    out: list[list[str]] = [[] for _ in range(8)]

    def make(bucket: list[str]) -> None:
        bucket.extend(new_id() for _ in range(5000))

    threads = [threading.Thread(target=make, args=(b,)) for b in out]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then no id repeats, and each thread saw its own ids increase
    every = [i for b in out for i in b]
    assert len(set(every)) == len(every) == 40_000
    for b in out:
        assert b == sorted(b)
