"""conveyor beside the peers, and the issue's targets as ratios.

    python bench/compare.py                                   # latest full SQLite run everywhere
    python bench/compare.py --backend redis                   # latest full Redis run vs Redis peers
    python bench/compare.py --ours bench/results/2026-11-23.jsonl --run-id 2026-11-23T06:03:42 \\
        --peers ../shared/peers/sql/results/2026-11-23.jsonl ../shared/peers/bullmq/results/2026-11-23.jsonl

Our rows: the given run id(s) (default: the last full run of --backend with a W2 row), medians
when a workload ran several times; several run ids merge (e.g. the full run plus a 1M-backlog
run). Peer rows: per (system, backend), the given --peer-run-id(s), else the latest run of that
peer that has a W2 row; rows made with `--set` overrides are left out. With --backend redis only
the peers on Redis are shown (BullMQ and the Python peers) and the targets are the Redis ones.
Only compare runs from the same sitting: the machine is shared and noisy.
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
    ("W2 redis CPU us/job", "w2", "redis_cpu_us_per_job", ",.0f"),
    ("W3 x ideal", "w3", "ratio_to_ideal", ".2f"),
    ("W4 p50 ms", "w4", "p50_ms", ".2f"),
    ("W4 p99 ms", "w4", "p99_ms", ".2f"),
    ("W5a steady/s", "w5a", "steady_jobs_per_s", ",.0f"),
    ("W5b steady/s", "w5b", "steady_jobs_per_s", ",.0f"),
    ("bytes/queued job", "mem", "store_bytes_per_queued_job", ",.0f"),
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


def check(name: str, ours: float | None, peer: float | None, want: float) -> str:
    if ours is None or not peer:
        return f"  {name}: n/a"
    ratio = ours / peer
    return (f"  {name}: {ours:,.0f} / {peer:,.0f} = {ratio:.2f}x  "
            f"{'met' if ratio >= want else 'MISSED'}")  # fmt: skip


def ceiling(name: str, v: float | None, limit: float) -> str:
    verdict = "n/a" if v is None else "met" if v <= limit else "MISSED"
    return f"  {name}: {fmt(v, '.2f')}  {verdict}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--backend", choices=["sqlite", "redis"],
                    help="our backend (default: that of --run-id, else sqlite)")  # fmt: skip
    ap.add_argument("--ours", nargs="*",
                    help="our results file(s) (default: newest bench/results/*.jsonl)")  # fmt: skip
    ap.add_argument("--run-id", action="append", default=[], help="our run id(s)")
    ap.add_argument("--peers", nargs="*", help="peer results files (default: newest of each)")
    ap.add_argument("--peer-run-id", action="append", default=[], help="peer run id(s)")
    args = ap.parse_args()

    ours_files = [Path(p) for p in args.ours] if args.ours else [
        f for f in [latest_date_file(HERE / "results")] if f
    ]  # fmt: skip
    if not ours_files:
        raise SystemExit("no results yet: run bench/run.py")
    ours_file = ", ".join(map(str, ours_files))
    rows = [r for f in ours_files for r in read(f)]
    if args.run_id:
        ours = [r for r in rows if r.get("run_id") in args.run_id]
        backend = args.backend or next((r.get("backend") for r in ours), "sqlite")
        ours = [r for r in ours if r.get("backend", "sqlite") == backend]
        rids = args.run_id
    else:
        backend = args.backend or "sqlite"
        full = [r for r in rows if r.get("mode") == "full" and r["workload"] == "w2"
                and r.get("backend", "sqlite") == backend]  # fmt: skip
        if not full:
            raise SystemExit(f"no full {backend} run with a W2 row in {ours_file}")
        rids = [full[-1]["run_id"]]
        ours = [r for r in rows if r.get("run_id") in rids]
    if not ours:
        raise SystemExit(f"no {backend} rows for run id(s) {rids} in {ours_file}")
    agg = {r["workload"]: r for r in aggregate(ours)}
    peer_root = HERE.parent.parent / "shared" / "peers"
    files = [Path(p) for p in args.peers] if args.peers else [
        f for d in PEER_DIRS if (f := latest_date_file(peer_root / d / "results"))
    ]  # fmt: skip
    c = f"conveyor ({backend})"
    others = peers(files, args.peer_run_id)
    if backend == "redis":
        others = {k: v for k, v in others.items() if k.endswith("(redis)")}
    table = {c: {wl: r for wl, r in agg.items()}} | others

    print(f"conveyor: {ours_file} run(s) {', '.join(rids)}")
    for label, d in table.items():
        if "_runs" in d:
            print(f"{label}: {d['_runs']['file']} run(s) {', '.join(d['_runs']['ids'])}")
    fields = [f for f in FIELDS if backend == "redis" or f[2] != "redis_cpu_us_per_job"]
    hdr = ["system"] + [h for h, *_ in fields]
    lines = []
    for label, d in table.items():
        lines.append([label] + [fmt((d.get(w) or {}).get(f), spec) for _, w, f, spec in fields])
    print()
    print(_render(hdr, lines))

    def get(label: str, wl: str, f: str) -> float | None:
        return (table.get(label, {}).get(wl) or {}).get(f)

    print("\nTargets (ratios to peers in the files above):")
    if backend == "redis":
        py = {k: get(k, "w2", "jobs_per_s") for k in table if k != c and not k.startswith("bullmq")}
        best = max((k for k, v in py.items() if v), key=lambda k: py[k], default=None)
        lines = [
            check("W2 drain >= 1x BullMQ (redis)", get(c, "w2", "jobs_per_s"),
                  get("bullmq (redis)", "w2", "jobs_per_s"), 1.0),
            check("W2 drain >= 3x dramatiq (redis)", get(c, "w2", "jobs_per_s"),
                  get("dramatiq (redis)", "w2", "jobs_per_s"), 3.0),
        ]  # fmt: skip
        if best and best != "dramatiq (redis)":
            lines.append(check(f"W2 drain >= 3x best Python-on-Redis peer, {best}",
                               get(c, "w2", "jobs_per_s"), py[best], 3.0))  # fmt: skip
        lines += [
            check("W1 enqueue >= 1x BullMQ addBulk", get(c, "w1", "jobs_per_s"),
                  get("bullmq (redis)", "w1", "jobs_per_s"), 1.0),
            ceiling("W4 p99 <= 1 ms (worker process)", get(c, "w4", "p99_ms"), 1.0),
            ceiling("bytes per queued job <= 500 (redis used_memory)",
                    get(c, "mem", "store_bytes_per_queued_job"), 500.0),
        ]  # fmt: skip
        for ln in lines:
            print(ln)
    else:
        for ln in (
            check("W2 drain >= 1x BullMQ (redis)", get(c, "w2", "jobs_per_s"),
                  get("bullmq (redis)", "w2", "jobs_per_s"), 1.0),
            check("W2 drain >= 1x pgqueuer", get(c, "w2", "jobs_per_s"),
                  get("pgqueuer (postgresql)", "w2", "jobs_per_s"), 1.0),
            check("W1 enqueue >= 2x BullMQ addBulk", get(c, "w1", "jobs_per_s"),
                  get("bullmq (redis)", "w1", "jobs_per_s"), 2.0),
            ceiling("W4 p99 <= 5 ms (worker process)", get(c, "w4", "p99_ms"), 5.0),
            ceiling("W4-inproc p99 <= 2 ms", get(c, "w4-inproc", "p99_ms"), 2.0),
            ceiling("W3 <= 1.10x ideal", get(c, "w3", "ratio_to_ideal"), 1.10),
            ceiling("idle CPU < 1%", get(c, "idle", "cpu_percent"), 1.0),
            ceiling("idle RSS <= 60 MB", get(c, "idle", "rss_mb"), 60.0),
        ):  # fmt: skip
            print(ln)
    # W5: the biggest backlog against the smallest, over all selected rows of our run(s)
    w5 = [r for r in aggregate(ours) if r["workload"] in ("w5a", "w5b") and r.get("status") == "ok"
          and r.get("steady_jobs_per_s")]  # fmt: skip
    if len(w5) >= 2:
        small = min(w5, key=lambda r: r["n"])
        big = max(w5, key=lambda r: r["n"])
        r = big["steady_jobs_per_s"] / small["steady_jobs_per_s"]
        print(f"  W5 {big['n']:,} queued >= 0.9x {small['n']:,}: {big['steady_jobs_per_s']:,.0f} / "
              f"{small['steady_jobs_per_s']:,.0f} = {r:.3f}x  {'met' if r >= 0.9 else 'MISSED'}")  # fmt: skip
        w2 = agg.get("w2", {}).get("steady_jobs_per_s")
        if w2 and big is not small:
            r2 = big["steady_jobs_per_s"] / w2
            print(f"  (W5 {big['n']:,} vs W2 steady {w2:,.0f}: {r2:.2f}x; the small W5 window is "
                  "short and includes warm-up)")  # fmt: skip


if __name__ == "__main__":
    main()
