"""HTTP API throughput and latency (issue 13's targets), measured with ``wrk`` against one
uvicorn process (``bench/httpapi_server.py``) on a fresh store:

- ``bare``: the same ``POST /v1/jobs`` request against a FastAPI route that only validates the
  body (``httpapi_server.py --bare``): the framework's ceiling here, for the ratio;
- ``submit``: ``POST /v1/jobs`` (one no-op job per request), requests per second;
- ``batch``: ``POST /v1/jobs/batch`` of ``--batch-size`` jobs, jobs per second;
- ``get``: ``GET /v1/jobs/{id}`` of one job under ``--get-connections`` connections as fast as
  they go (closed loop: latency = connections / throughput), p50/p99;
- ``paced``: the same GET from ``--get-connections`` clients that each send ``--paced-rps``
  requests per second (``h2load --rps``, open loop), p50/p99 from h2load's per-request log: the
  latency a client sees when the server is not saturated.

    .venv/bin/python bench/httpapi.py [--backend sqlite|redis] [--duration 10] [--connections 64]

Needs ``wrk`` and ``h2load`` (Debian: ``apt-get install wrk nghttp2-client``). wrk and the server share the machine's cores,
as the peers' HTTP numbers do; the table notes it. Every response must be 2xx: the run fails
otherwise (a fast error is not throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import make_app
from bench.targets import TARGETS, free_port

WRK_POST = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""
WRK_GET = """
wrk.headers["Authorization"] = "Bearer {key}"
"""


async def _admin_key(url: str) -> str:
    app = make_app(url)
    async with app:
        _, key = await app.api_keys.create(tenant=None, admin=True, name="bench")
    return key


def _wrk(script: Path, target: str, connections: int, duration: float) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(script),
         target],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors:.*", out)
    lat = {}
    for p in ("50", "99"):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if m:
            v = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
            lat[f"p{p}_ms"] = v
    if bad or errs:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return {"rps": rps, **lat}


def _serve(url: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.httpapi_server", "--url", url, "--port", str(port), *extra],
        cwd=Path(__file__).resolve().parent.parent, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).raise_for_status()
            return server
        except httpx.HTTPError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise
            time.sleep(0.1)


def _bare(key: str, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    server = _serve("unused", port, "--bare")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            s = Path(tmp) / "bare.lua"
            body = json.dumps({"task": "noop", "payload": {}})
            s.write_text(WRK_POST.format(body=json.dumps(body), key=key))
            return _wrk(s, f"http://127.0.0.1:{port}/v1/jobs", args.connections, args.duration)
    finally:
        os.killpg(server.pid, 15)
        server.wait(10)


def _h2load_paced(target: str, key: str, clients: int, rps: float, duration: float,
                  log: Path) -> dict[str, float]:  # fmt: skip
    subprocess.run(
        ["h2load", "--h1", f"-c{clients}", f"--rps={rps:g}", f"-D{duration:g}",
         "-H", f"Authorization: Bearer {key}", "--log-file", str(log), target],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    bad = [r for r in rows if not r[1].startswith("2")]
    if bad:
        raise RuntimeError(f"h2load saw {len(bad)} non-2xx answers")
    lat = sorted(int(r[2]) / 1000.0 for r in rows)  # microseconds -> ms

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))]

    return {"rps": len(lat) / duration, "p50_ms": pct(0.50), "p99_ms": pct(0.99)}


def main() -> None:
    ap = argparse.ArgumentParser(prog="bench/httpapi.py")
    ap.add_argument("--backend", choices=sorted(TARGETS), default="sqlite")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--get-connections", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--paced-rps", type=float, default=20.0, help="paced: per client")
    ap.add_argument("--only", default="bare,submit,batch,get,paced")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/httpapi.py needs wrk: apt-get install wrk")
    only = set(args.only.split(","))
    target = TARGETS[args.backend]()
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-http-"))
    url = target.fresh(tmp, "http")
    key = asyncio.run(_admin_key(url))
    rows: dict[str, dict[str, float]] = {}
    if "bare" in only:
        rows["bare"] = _bare(key, args)
    port = free_port()
    server = _serve(url, port)
    base = f"http://127.0.0.1:{port}"
    try:
        auth = {"Authorization": f"Bearer {key}"}
        if "submit" in only:
            s = tmp / "submit.lua"
            body = json.dumps({"task": "noop", "payload": {}})
            s.write_text(WRK_POST.format(body=json.dumps(body), key=key))
            rows["submit"] = _wrk(s, f"{base}/v1/jobs", args.connections, args.duration)
        if "batch" in only:
            s = tmp / "batch.lua"
            items = [{"task": "noop", "payload": {}} for _ in range(args.batch_size)]
            body = json.dumps({"jobs": items})
            s.write_text(WRK_POST.format(body=json.dumps(body), key=key))
            r = _wrk(s, f"{base}/v1/jobs/batch", 8, args.duration)
            r["jobs_per_s"] = r["rps"] * args.batch_size
            rows["batch"] = r
        if "get" in only:
            job = httpx.post(f"{base}/v1/jobs", json={"task": "noop"}, headers=auth).json()
            s = tmp / "get.lua"
            s.write_text(WRK_GET.format(key=key))
            rows["get"] = _wrk(
                s, f"{base}/v1/jobs/{job['job']['id']}", args.get_connections, args.duration
            )
        if "paced" in only:
            job = httpx.post(f"{base}/v1/jobs", json={"task": "noop"}, headers=auth).json()
            rows["paced"] = _h2load_paced(
                f"{base}/v1/jobs/{job['job']['id']}", key, args.get_connections,
                args.paced_rps, args.duration, tmp / "h2load.log",
            )  # fmt: skip
    finally:
        os.killpg(server.pid, 15)
        server.wait(10)
        target.drop(url)
        target.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"backend={args.backend} cores={os.cpu_count()} (wrk -t2 shares them with the server)")
    if "bare" in rows and "submit" in rows:
        print(f"submit / bare FastAPI route: {rows['submit']['rps'] / rows['bare']['rps']:.2f}")
    for name, r in rows.items():
        extra = f"  jobs/s {r['jobs_per_s']:,.0f}" if "jobs_per_s" in r else ""
        print(f"{name:7} req/s {r['rps']:9,.0f}  p50 {r.get('p50_ms', 0):6.2f} ms  "
              f"p99 {r.get('p99_ms', 0):6.2f} ms{extra}")  # fmt: skip
    print("RESULT " + json.dumps({"backend": args.backend, **rows}))


if __name__ == "__main__":
    main()
