"""The API server process of ``bench/httpapi.py``: the bench app (bench/common.py) behind
`conveyor.server.create_app`, served by uvicorn on a loopback port, the way ``conveyor serve``
runs it (one process, no worker), with the per-key rate limit off.

    python -m bench.httpapi_server --url URL --port PORT
"""

from __future__ import annotations

import argparse

import uvicorn

from bench.common import make_app
from conveyor.server import ServerSettings, create_app


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.httpapi_server")
    ap.add_argument("--url", required=True)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    api = create_app(make_app(args.url), ServerSettings(rate_limit=None))
    uvicorn.run(api, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
