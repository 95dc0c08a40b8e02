"""The API server process of ``bench/httpapi.py``: the bench app (bench/common.py) behind
`conveyor.server.create_app`, served by uvicorn on a loopback port, the way ``conveyor serve``
runs it (one process, no worker), with the per-key rate limit off.

    python -m bench.httpapi_server --url URL --port PORT [--bare]

``--bare``: instead, a FastAPI app whose ``POST /v1/jobs`` validates the same body and returns a
constant, under the same uvicorn: the ceiling of the framework on this machine, measured in the
same sitting as conveyor's routes.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI

from bench.common import make_app
from conveyor.server import ServerSettings, create_app
from conveyor.server.models import SubmitJob


def _bare() -> FastAPI:
    bare = FastAPI()

    @bare.post("/v1/jobs", status_code=202)
    async def submit(body: SubmitJob) -> dict[str, Any]:
        return {"job": {"id": "0", "task": body.task}, "created": True, "estimate": None}

    @bare.get("/health")
    async def ready() -> dict[str, Any]:
        return {}

    return bare


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.httpapi_server")
    ap.add_argument("--url", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bare", action="store_true")
    args = ap.parse_args()
    api = _bare() if args.bare else create_app(make_app(args.url), ServerSettings(rate_limit=None))
    uvicorn.run(api, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
