"""A small Server-Sent Events reader for the API tests: the raw protocol, independent of
`conveyor.Client` (which has its own parser), so the route is checked on the wire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson


@dataclass
class Message:
    id: str | None = None
    event: str | None = None
    data: Any = None
    comments: list[str] = field(default_factory=list)


async def messages(response: httpx.Response) -> AsyncIterator[Message]:
    """The messages of an SSE response (comment-only blocks too), as they arrive."""
    msg = Message()
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                msg.data = orjson.loads("\n".join(data))
            if data or msg.comments or msg.id is not None:
                yield msg
            msg, data = Message(), []
        elif line.startswith(":"):
            msg.comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "id":
                msg.id = value
            elif name == "event":
                msg.event = value


async def take_events(
    stream: AsyncIterator[Message], count: int, timeout: float = 10.0
) -> list[Message]:
    """The next ``count`` messages that are events (keep-alives skipped)."""
    out: list[Message] = []
    async with asyncio.timeout(timeout):
        async for m in stream:
            if m.event is not None:
                out.append(m)
                if len(out) == count:
                    break
    return out
