"""The backend operations of fan-out / fan-in (`FanInStore`, part of `Backend`).

A parent's park for children is an `Outcome` of kind ``await`` with ``fanout`` set and the
children in ``then`` (spawn order): in that one atomic step the parent becomes ``awaiting`` (no
deadline, no slot, no lease), its fan-in record (policy, total, settled 0, waiting) and one
*edge* per child are stored, and the children are created (SQLite) or written to the parent
queue's outbox (Redis). Each child's final transition settles its edge exactly once (SQLite:
in the child's own transaction; Redis: a settle message in the child queue's outbox, applied
in the parent's slot by an idempotent script). See docs/architecture.md "Fan-out and fan-in".
"""

from __future__ import annotations

from typing import Protocol

from ..fanin import ChildResult


class FanInStore(Protocol):
    """Fan-in reads. The transitions ride on finish, cancel, recovery and the await sweep."""

    async def read_children(self, parent_id: str, queue: str) -> list[ChildResult]:
        """The children of the parent's last fan-out round in spawn order (a pending one has
        status None); empty when the job never spawned. ``queue``: the parent's queue."""


__all__ = ["FanInStore"]
