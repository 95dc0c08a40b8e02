"""Lua scripts: loaded once per server (EVALSHA), reloaded on NOSCRIPT; error replies mapped to
conveyor exceptions in one table."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from ...errors import ConveyorError, JobNotFound, JobStateError, QueueFull

NAMES = (
    "admit", "badd", "batch", "bdone", "bfire", "bpart", "bstate", "cancel", "claim", "cost",
    "enqueue", "event", "events", "expire", "extend", "finish", "heartbeat", "keyrevoke",
    "keystore", "pause", "peek", "progress", "prune", "recover", "release", "reserve", "resume",
    "retry", "settle", "trim", "workers",
)  # fmt: skip
# Scripts that move flow-controlled jobs get includes/flow.lua after includes/common.lua.
FLOW = frozenset(
    {"cancel", "claim", "enqueue", "expire", "finish", "peek", "prune", "recover", "release",
     "resume", "retry", "settle"}
)  # fmt: skip
# Scripts that make due work claimable get includes/claiming.lua (after flow.lua).
CLAIMING = frozenset({"claim", "peek"})
# Scripts that can fail an attempt get includes/attempt.lua (the one failure transition).
ATTEMPT = frozenset({"finish", "recover"})
# Scripts that park or resume awaiting jobs get includes/awaiting.lua (human in the loop).
AWAITING = frozenset({"expire", "finish", "resume", "settle"})
# Scripts that end jobs for good or settle a parent get includes/fanin.lua (before attempt.lua).
FANIN = frozenset({"cancel", "expire", "finish", "recover", "settle"})
# Scripts that read or trim the event log get includes/streams.lua.
STREAMS = frozenset({"enqueue", "events", "trim"})
# Scripts that check a queue's max_queued get includes/backpressure.lua.
BACKPRESSURE = frozenset({"admit", "enqueue", "retry"})


# Scripts made of another's body with a prelude in front (same includes): `tick` is cron.lua
# (claim a schedule's tick) falling through into enqueue.lua (store the tick's job).
PRELUDES = {"tick": ("cron", "enqueue")}


def _load(name: str) -> str:
    prelude, body = PRELUDES.get(name, (None, name))
    lua = resources.files(__package__).joinpath("lua")
    parts = [lua.joinpath("includes/common.lua").read_text()]
    for names, include in ((FLOW, "flow"), (FANIN, "fanin"), (CLAIMING, "claiming"),
                           (ATTEMPT, "attempt"),
                           (AWAITING, "awaiting"), (STREAMS, "streams"),
                           (BACKPRESSURE, "backpressure")):  # fmt: skip
        if body in names:
            parts.append(lua.joinpath(f"includes/{include}.lua").read_text())
    if prelude is not None:
        parts.append(lua.joinpath(f"{prelude}.lua").read_text())
    parts.append(lua.joinpath(f"{body}.lua").read_text())
    return "\n".join(parts)


class Script:
    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = _load(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


SCRIPTS = {name: Script(name) for name in (*NAMES, *PRELUDES)}

# Error replies from scripts -> exceptions. Each maker gets (job id, or the queue for
# QUEUEFULL, and the reply text).
ERRORS: dict[str, Callable[[str, str], ConveyorError]] = {
    "NOTFOUND": lambda job_id, _: JobNotFound(job_id),
    "STATE": lambda job_id, text: JobStateError(job_id, text.split(maxsplit=1)[1], "change"),
    "QUEUEFULL": lambda queue, text: queue_full(queue, text),
}


def queue_full(queue: str, text: str) -> QueueFull:
    """``QUEUEFULL <count> <needed> <limit>`` -> `QueueFull`."""
    count, needed, limit = (int(float(x)) for x in text.split()[1:4])
    return QueueFull(queue, limit, count, needed)


def translate(exc: ResponseError, job_id: str, action: str) -> BaseException:
    text = str(exc)
    code = text.split()[0] if text else ""
    maker = ERRORS.get(code)
    if maker is None:
        return exc
    err = maker(job_id, text)
    if isinstance(err, JobStateError):
        err = JobStateError(job_id, err.state, action)
    return err


async def evalsha(client: Any, script: Script, keys: list[str], args: list[Any]) -> Any:
    """Run a script by SHA; on NOSCRIPT (a restarted or new server) load it and run again."""
    try:
        return await client.evalsha(script.sha, len(keys), *keys, *args)
    except NoScriptError:
        await client.script_load(script.source)
        return await client.evalsha(script.sha, len(keys), *keys, *args)
