"""conveyor beside the peers, and the issue's targets as ratios.

    python bench/compare.py                                   # latest full runs everywhere
    python bench/compare.py --ours bench/results/2026-11-23.jsonl --run-id 2026-11-23T06:03:42 \\
        --peers ../shared/peers/sql/results/2026-11-23.jsonl ../shared/peers/bullmq/results/2026-11-23.jsonl

Our rows: the given run id(s) (default: the last full run with a W2 row), medians when a workload
ran several times. Peer rows: per (system, backend), the given --peer-run-id(s), else the latest
run of that peer that has a W2 row; rows made with `--set` overrides are left out. Medians over
the selected rows. Only compare runs from the same sitting: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.run import _render, aggregate, fmt  # noqa: E402

PEER_DIRS = ["sql", "bullmq", "python"]
FIELDS = [  # (header, workload, field, format)
    ("W1 enq/s", "w1", "jobs_per_s", ",.0f"),
    ("W2 jobs/s", "w2", "jobs_per_s", ",.0f"),
    ("W2 steady/s", "w2", "steady_jobs_per_s", ",.0f"),
    ("W2 worker CPU us/job", "w2", "worker_cpu_us_per_job", ",.0f"),
    ("W3 x ideal", "w3", "ratio_to_ideal", ".2f"),
    ("W4 p50 ms", "w4", "p50_ms", ".2f"),
    ("W4 p99 ms", "w4", "p99_ms", ".2f"),
    ("W5a steady/s", "w5a", "steady_jobs_per_s", ",.0f"),
    ("W5b steady/s", "w5b", "steady_jobs_per_s", ",.0f"),
]


def read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def latest_date_file(folder: Path) -> Path | None:
    files = sorted(folder.glob("*.jsonl"))
    return files[-1] if files else None


def median_rows(rows: list[dict]) -> dict[str, dict]:
    """workload -> {field: median} over ok rows."""
    out: dict[str, dict] = {}
    by: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("status") == "ok":
            by.setdefault(r["workload"], []).append(r)
    for wl, rs in by.items():
        m = {}
        for _, w, f, _ in FIELDS:
            if w == wl:
                vals = [r[f] for r in rs if isinstance(r.get(f), int | float)]
                m[f] = statistics.median(vals) if vals else None
        m["runs"] = len(rs)
        m["n"] = rs[-1].get("n")
        out[wl] = m
    return out


def peers(files: list[Path], run_ids: list[str]) -> dict[str, dict[str, dict]]:
    result = {}
    for path in files:
        rows = [r for r in read(path) if not r.get("overrides")]
        keys = dict.fromkeys((r["system"], r.get("backend", "redis")) for r in rows)
        for key in keys:
            mine = [r for r in rows if (r["system"], r.get("backend", "redis")) == key]
            if run_ids:
                sel = [r for r in mine if r.get("run_id") in run_ids]
            else:
                with_w2 = [r["run_id"] for r in mine if r["workload"] == "w2"]
                sel = [r for r in mine if with_w2 and r["run_id"] == with_w2[-1]]
            if sel:
                rids = sorted({r["run_id"] for r in sel})
                label = f"{key[0]} ({key[1]})"
                result[label] = median_rows(sel) | {"_runs": {"ids": rids, "file": str(path)}}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--ours", help="our results file (default: newest bench/results/*.jsonl)")
    ap.add_argument("--run-id", action="append", default=[], help="our run id(s)")
    ap.add_argument("--peers", nargs="*", help="peer results files (default: newest of each)")
    ap.add_argument("--peer-run-id", action="append", default=[], help="peer run id(s)")
    args = ap.parse_args()

    ours_file = Path(args.ours) if args.ours else latest_date_file(HERE / "results")
    if ours_file is None:
        raise SystemExit("no results yet: run bench/run.py")
    rows = read(ours_file)
    rids = args.run_id or [
        next(
            r["run_id"] for r in reversed(rows) if r.get("mode") == "full" and r["workload"] == "w2"
        )
    ]
    ours = [r for r in rows if r.get("run_id") in rids]
    agg = {r["workload"]: r for r in aggregate(ours)}
    peer_root = HERE.parent.parent / "shared" / "peers"
    files = [Path(p) for p in args.peers] if args.peers else [
        f for d in PEER_DIRS if (f := latest_date_file(peer_root / d / "results"))
    ]  # fmt: skip
    table = {"conveyor (sqlite)": {wl: r for wl, r in agg.items()}} | peers(files, args.peer_run_id)

    print(f"conveyor: {ours_file} run(s) {', '.join(rids)}")
    for label, d in table.items():
        if "_runs" in d:
            print(f"{label}: {d['_runs']['file']} run(s) {', '.join(d['_runs']['ids'])}")
    hdr = ["system"] + [h for h, *_ in FIELDS]
    lines = []
    for label, d in table.items():
        lines.append([label] + [fmt((d.get(w) or {}).get(f), spec) for _, w, f, spec in FIELDS])
    print()
    print(_render(hdr, lines))

    def get(label: str, wl: str, f: str) -> float | None:
        return (table.get(label, {}).get(wl) or {}).get(f)

    c = "conveyor (sqlite)"
    checks = [
        ("W2 drain >= 1x BullMQ (redis)", get(c, "w2", "jobs_per_s"),
         get("bullmq (redis)", "w2", "jobs_per_s"), 1.0),
        ("W2 drain >= 1x pgqueuer", get(c, "w2", "jobs_per_s"),
         get("pgqueuer (postgresql)", "w2", "jobs_per_s"), 1.0),
        ("W1 enqueue >= 2x BullMQ addBulk", get(c, "w1", "jobs_per_s"),
         get("bullmq (redis)", "w1", "jobs_per_s"), 2.0),
    ]  # fmt: skip
    print("\nTargets (ratios to peers in the files above):")
    for name, ours_v, peer_v, want in checks:
        if ours_v is None or not peer_v:
            print(f"  {name}: n/a")
            continue
        ratio = ours_v / peer_v
        print(f"  {name}: {ours_v:,.0f} / {peer_v:,.0f} = {ratio:.2f}x  "
              f"{'met' if ratio >= want else 'MISSED'}")  # fmt: skip
    floors = [
        ("W4 p99 <= 5 ms (worker process)", get(c, "w4", "p99_ms"), 5.0),
        ("W4-inproc p99 <= 2 ms", get(c, "w4-inproc", "p99_ms"), 2.0),
        ("W3 <= 1.10x ideal", get(c, "w3", "ratio_to_ideal"), 1.10),
        ("idle CPU < 1%", get(c, "idle", "cpu_percent"), 1.0),
        ("idle RSS <= 60 MB", get(c, "idle", "rss_mb"), 60.0),
    ]
    for name, v, limit in floors:
        print(
            f"  {name}: {fmt(v, '.2f')}  {'n/a' if v is None else 'met' if v <= limit else 'MISSED'}"
        )
    a, b = agg.get("w5a"), agg.get("w5b")
    if a and b and a.get("steady_jobs_per_s") and b.get("steady_jobs_per_s"):
        r = b["steady_jobs_per_s"] / a["steady_jobs_per_s"]
        print(f"  W5 {b['n']:,} queued >= 0.9x {a['n']:,}: {b['steady_jobs_per_s']:,.0f} / "
              f"{a['steady_jobs_per_s']:,.0f} = {r:.2f}x  {'met' if r >= 0.9 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
