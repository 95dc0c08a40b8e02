"""Redis reads of fan-in (`FanInStore`): a parent's last round of children, from
``fc:<parent>`` (child id -> 'index queue') and ``fr:<parent>`` (child id -> its settled end),
both in the parent's slot (lua/includes/fanin.lua, lua/settle.lua)."""

from __future__ import annotations

from typing import Any

import orjson

from ...fanin import ChildResult
from .codec import STATES


class RedisFanIn:
    """Mixed into `RedisBackend`."""

    async def read_children(self, parent_id: str, queue: str) -> list[ChildResult]:
        b: Any = self
        pipe = b._client().pipeline(transaction=False)
        pipe.hgetall(b.key(queue, f"fc:{parent_id}"))
        pipe.hgetall(b.key(queue, f"fr:{parent_id}"))
        spots, ends = await pipe.execute()
        out: list[ChildResult] = []
        for child, spot in spots.items():
            index = int(spot.split(" ", 1)[0])
            end = ends.get(child)
            if end is None:
                out.append(ChildResult(child, index, None))
                continue
            e = orjson.loads(end)
            out.append(ChildResult(child, index, STATES[e["s"]],
                                   orjson.loads(e["r"]) if e.get("r") else None,
                                   orjson.loads(e["e"]) if e.get("e") else None))  # fmt: skip
        out.sort(key=lambda c: c.index)
        return out


__all__ = ["RedisFanIn"]
