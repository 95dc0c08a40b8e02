"""Records: one JSON object per line, appended with one ``write`` to a file opened ``O_APPEND``.

Every process writes its own file (``<kind>-<pid>.jsonl``) in the run's directory, so a ``kill -9``
loses nothing already written, and lines of different processes never interleave. Kinds:

- ``ack``: the producer, after an enqueue returned: ``job``, ``q`` queue, ``p`` priority,
  ``due`` (the time before the call plus the delay: the job may not start earlier), ``t``
  (when the call returned), ``b``/``n`` (batch label and size for ``enqueue_many``).
- ``begin``: the producer, before an ``enqueue_many``: ``b``, ``n`` (a batch whose ``begin``
  has no ``ack`` was in flight when the producer died).
- ``start``: a handler, first thing: ``job``, ``tok`` (the claim token), ``att``, ``pid``,
  ``t``, ``c`` (the claim time, the backend's ``started_at``).
- ``finish`` / ``abort``: a handler returning / being cancelled: ``job``, ``tok``, ``pid``, ``t``.
- faults, by the harness: ``kill`` (``pid``, ``t``), ``stop`` (SIGTERM: ``pid``, ``t``, ``exit``
  seconds to exit), ``restart`` (a backend down from ``t0`` to ``t1``).

Times are seconds since the epoch on the host's true clock: a process whose clock was skewed on
purpose subtracts its known skew (``CHAOS_SKEW``) before writing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson


class RecordFile:
    """An append-only JSON-lines file; each `write` is one ``write(2)`` of one whole line."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        os.write(self._fd, orjson.dumps(record) + b"\n")

    def write_many(self, records: list[dict[str, Any]]) -> None:
        """Several records in one ``write`` (a producer's acknowledgements of one batch)."""
        if records:
            os.write(self._fd, b"".join(orjson.dumps(r) + b"\n" for r in records))

    def close(self) -> None:
        os.close(self._fd)


def read_records(directory: str | Path) -> Iterator[dict[str, Any]]:
    """Every record of every ``*.jsonl`` file in ``directory``. A last line cut short by a kill
    (never seen with one ``write`` per line, but cheap to allow) is skipped."""
    for path in sorted(Path(directory).glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            if not line:
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
