"""``python -m bench.chaos``: run the chaos scenarios on one backend and print the checker's
report of each (JSON, one line per scenario, also appended to ``--results``).

    python -m bench.chaos --backend sqlite --scenario all --jobs 20000
    python -m bench.chaos --backend redis --scenario kill9,restart --jobs 2000

Exit status 1 when any scenario reports a violation.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

from .faults import RedisServer
from .harness import Config
from .scenarios import SCENARIOS

ALL = ("kill9", "restart", "stop", "poison", "skew+", "skew-")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--backend", choices=("sqlite", "redis"), default="sqlite")
    ap.add_argument("--scenario", default="all",
                    help=f"comma-separated: {', '.join(ALL)}, skew (both signs) or all")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=20_000, help="kill9 and restart: jobs produced")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=25)
    ap.add_argument("--lease", type=float, default=2.0)
    ap.add_argument("--rate", type=float, default=400.0, help="jobs/s from the producer")
    ap.add_argument("--restarts", type=int, default=2)
    ap.add_argument("--appendfsync", choices=("everysec", "always"), default="everysec",
                    help="redis-server's AOF fsync policy")  # fmt: skip
    ap.add_argument("--producer-kills", type=int, default=5)
    ap.add_argument("--stop-grace", type=float, default=3.0)
    ap.add_argument("--stop-long-ms", type=int, default=30_000, help="the jobs that outlive it")
    ap.add_argument("--poison-jobs", type=int, default=1000)
    ap.add_argument("--poison-concurrency", type=int, default=0, help="0: --concurrency")
    ap.add_argument("--max-stalls", type=int, default=3)
    ap.add_argument("--skew", type=float, default=300.0, help="seconds")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", default=None, help="keep records and logs here (default: temp)")
    ap.add_argument("--results", default=str(Path(__file__).resolve().parents[1] / "results"))
    return ap.parse_args(argv)


def _scrubbed(argv: list[str]) -> list[str]:
    """The command line without the (absolute) ``--dir``."""
    return ["<dir>" if i and argv[i - 1] == "--dir" else a for i, a in enumerate(argv)]


def scenario_names(spec: str) -> list[str]:
    names: list[str] = []
    for s in spec.split(","):
        s = s.strip()
        names += list(ALL) if s == "all" else ["skew+", "skew-"] if s == "skew" else [s]
    bad = [n for n in names if n not in SCENARIOS]
    if bad:
        raise SystemExit(f"unknown scenario {bad[0]!r}: use {', '.join(ALL)}, skew or all")
    return names


async def main(args: argparse.Namespace) -> int:
    names = scenario_names(args.scenario)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    server = RedisServer(work / "redis", args.appendfsync) if args.backend == "redis" else None
    cfg = Config(
        backend=args.backend, workdir=work, server=server, jobs=args.jobs,
        workers=args.workers, concurrency=args.concurrency, lease=args.lease, rate=args.rate,
        restarts=args.restarts, producer_kills=args.producer_kills, stop_grace=args.stop_grace, stop_long_ms=args.stop_long_ms,
        poison_jobs=args.poison_jobs, poison_concurrency=args.poison_concurrency, max_stalls=args.max_stalls, skew=args.skew,
        seed=args.seed,
    )  # fmt: skip
    failed = 0
    out = Path(args.results) / f"chaos-{datetime.date.today()}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for name in names:
            t0 = time.monotonic()
            rep = await SCENARIOS[name](cfg)
            row = {"scenario": name, "backend": args.backend, "ok": rep.ok,
                   "wall_s": round(time.monotonic() - t0, 1), **rep.summary(),
                   "argv": _scrubbed(sys.argv[1:]), "host": platform.node(),
                   "at": datetime.datetime.now().isoformat(timespec="seconds")}  # fmt: skip
            print(json.dumps(row), flush=True)
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            failed += not rep.ok
    finally:
        if server is not None:
            server.stop()
    print(f"records and logs: {work}", file=sys.stderr)
    return 1 if failed else 0


def cli() -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    sys.exit(asyncio.run(main(parse())))
