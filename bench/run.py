"""conveyor on the peers' workloads: W1 bulk enqueue, W2 drain, W3 I/O, W4 pickup latency
(worker process, and embedded), W5 backlog, idle worker CPU/RSS; and our own: lateness of
scheduled jobs and retries, store size per queued job (mem).

    python bench/run.py                         # full run (a few minutes)
    python bench/run.py --quick                 # small N, < 1 minute
    python bench/run.py --only w2,w4            # a subset (w5 = w5a + w5b)
    python bench/run.py --only lateness --backend redis   # scheduled jobs: start - due time
    python bench/run.py --only w5 --backlog 1000000 --small-backlog 1000
    python bench/run.py --backend redis --quick  # own redis-server on a free port, FLUSHALL per workload
    python bench/run.py --only mem --mem-n 1000000   # store size per queued job
    python bench/run.py --tune                  # W1 chunk and W2 concurrency search
    python bench/run.py --table bench/results/2026-11-23.jsonl [--run-id ID]

Each workload runs in a fresh driver process (``python -m bench.driver``) on a fresh store (a new
SQLite file in a temp dir, or FLUSHALL on the run's own redis-server); the driver starts ONE worker
process (``python -m bench.worker``).
Results: a table on stdout and one JSON line per workload appended to
``bench/results/<date>.jsonl``, with the peers' fields (../shared/peers/*/README.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine_busy  # noqa: E402
from bench.targets import TARGETS, NotImplementedYet  # noqa: E402

ORDER = ["w1", "w2", "w3", "w4", "w4-inproc", "lateness", "w5a", "w5b", "idle", "mem"]
FULL = {"w1": 20_000, "w2": 20_000, "w3": 2_000, "w4": 200, "w4-inproc": 200, "lateness": 200,
        "w5a": 2_000, "w5b": 200_000, "idle": 1, "mem": 1_000_000}  # fmt: skip
QUICK = {"w1": 5_000, "w2": 5_000, "w3": 500, "w4": 50, "w4-inproc": 50, "lateness": 50,
         "w5a": 1_000, "w5b": 20_000, "idle": 1, "mem": 100_000}  # fmt: skip
QUICK_OPT_IN = {"mem"}  # --quick runs these only when named in --only
W5_MEASURE = {"full": 20_000, "quick": 5_000}
IDLE_S = {"full": 5.0, "quick": 2.0}
# Chosen with --tune (bench/results/tuning/): see README "How the settings were chosen".
DEFAULT_CHUNK = 1_000
DEFAULT_CONCURRENCY = 200
TUNE_CHUNKS = [1_000, 5_000, 20_000]
TUNE_CONCURRENCY = [50, 100, 200, 500]


def python_exe() -> str:
    """This interpreter if it can import conveyor, else the repo's venv."""
    try:
        import conveyor  # noqa: F401

        return sys.executable
    except ImportError:
        venv = ROOT / ".venv" / "bin" / "python"
        if venv.exists():
            return str(venv)
        raise SystemExit("conveyor is not importable: run with the repo's .venv python") from None


def machine_info(target) -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    extra = target.describe()
    return (
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}" + (f", {extra}" if extra else "")
    )


def git_rev() -> str:
    """The commit measured, '+dirty' when src/ has uncommitted changes."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT,
                               text=True, capture_output=True).stdout.strip()  # fmt: skip
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return ""


def wait_quiet(max_wait: float, limit: float = 0.3) -> float:
    """Wait (up to max_wait s) until the machine uses < `limit` cores for 2 s in a row (the
    machine may be shared). Returns the seconds waited."""
    t0 = time.time()
    while True:
        b0 = machine_busy()
        time.sleep(2.0)
        if (machine_busy() - b0) / 2.0 < limit or time.time() - t0 >= max_wait:
            return round(time.time() - t0 - 2.0, 1)


def kill_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        time.sleep(0.5)


def reap_workers(tmp: Path) -> None:
    """Kill worker process groups a killed driver left behind (recorded by pid)."""
    pid_dir = tmp / "pids"
    if not pid_dir.is_dir():
        return
    for f in pid_dir.iterdir():
        try:
            kill_group(int(f.name))
        except ValueError:
            pass
        finally:
            f.unlink(missing_ok=True)


def run_one(py: str, target, wl: str, n: int, tmp: Path, opts: dict) -> dict:
    base = {"system": "conveyor", "version": None, "backend": target.name, "workload": wl,
            "n": n, "seconds": None, "jobs_per_s": None, "p50_ms": None, "p99_ms": None,
            "setting": "", "note": ""}  # fmt: skip
    url = target.fresh(tmp, wl)
    env = dict(os.environ)
    env.update({
        "BENCH_URL": url, "BENCH_TMP": str(tmp), "BENCH_LAT_FILE": str(tmp / "latency.txt"),
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        "PYTHONUNBUFFERED": "1",
    })  # fmt: skip
    env.update(target.env())
    if opts.get("prometheus"):
        env["BENCH_PROMETHEUS"] = "1"
    if opts.get("pyspy"):
        env["BENCH_PYSPY"] = str(Path(opts["pyspy"]).resolve() / f"{wl}-c{opts['concurrency']}")
        env["BENCH_PYSPY_FLAGS"] = opts.get("pyspy_flags") or ""
    argv = [py, "-m", "bench.driver", "--workload", wl, "--n", str(n),
            "--measure", str(opts["measure"]), "--timeout", str(opts["timeout"]),
            "--concurrency", str(opts["concurrency"]), "--chunk", str(opts["chunk"]),
            "--idle-s", str(opts["idle_s"])]  # fmt: skip
    # Hard limit for the whole driver, the untimed pre-enqueue included (~20 s per 1M jobs).
    hard = opts["timeout"] + 90 + (n / 1_000_000 * 120 if wl in ("w5b", "mem") else 0)
    out_path = tmp / "logs" / f"driver-{wl}.log"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(argv, cwd=str(ROOT), env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # fmt: skip
            try:
                proc.wait(timeout=hard)
            except subprocess.TimeoutExpired:
                kill_group(proc.pid)
                proc.wait()
                reap_workers(tmp)
                return {**base, "status": "timeout", "note": f"driver killed after {hard:.0f}s"}
        reap_workers(tmp)
        text = out_path.read_text(errors="replace")
        for line in reversed(text.splitlines()):
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT ") :])
        return {**base, "status": "error", "note": f"driver rc={proc.returncode}: {text[-800:]!r}"}
    finally:
        target.drop(url)


def scrub(row: dict, tmp: Path) -> dict:
    """Keep this machine's absolute paths out of the results."""
    text = json.dumps(row)
    for path, label in ((str(tmp), "<tmp>"), (str(ROOT), "<repo>"), (str(Path.home()), "~")):
        text = text.replace(json.dumps(path)[1:-1], label)
    return json.loads(text)


# -- tables -------------------------------------------------------------------------------------------


def fmt(v, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def _render(hdr: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(hdr, *lines, strict=False)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(hdr, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for ln in lines:
        out.append(
            "| " + " | ".join(str(x).ljust(w) for x, w in zip(ln, widths, strict=True)) + " |"
        )
    return "\n".join(out)


def extra(r: dict) -> str:
    wl = r["workload"]
    if wl == "w1":
        return f"producer {fmt(r.get('producer_cpu_us_per_job'), '.1f')} us/job"
    if wl == "w3":
        return f"{fmt(r.get('ratio_to_ideal'), '.2f')}x ideal {fmt(r.get('ideal_s'), '.1f')} s"
    if wl.startswith("w4"):
        s = f"max {fmt(r.get('max_ms'), '.2f')} mean {fmt(r.get('mean_ms'), '.2f')} ms"
        if r.get("process_cpu_us_per_job") is not None:
            s += f"; process {fmt(r['process_cpu_us_per_job'])} us/job"
        return s
    if wl == "w5b":
        return f"{fmt(r.get('measured_jobs'))} timed of {fmt(r['n'])} queued"
    if wl == "lateness":
        by = r.get("lateness") or {}
        parts = [f"{k} {fmt(v.get('p50_ms'), '.1f')}/{fmt(v.get('p99_ms'), '.1f')}"
                 for k, v in by.items()]  # fmt: skip
        return f"max {fmt(r.get('max_ms'), '.2f')} ms; p50/p99 " + ", ".join(parts)
    if wl == "mem":
        return (
            f"{fmt(r.get('store_bytes_per_queued_job'), ',.1f')} B/queued job"
            + (" (redis used_memory)" if r.get("backend") == "redis" else " (SQLite file)")
            + f"; enqueued at {fmt(r.get('enqueue_jobs_per_s'))}/s"
        )
    if wl == "idle":
        return (f"CPU {fmt(r.get('cpu_percent'), '.2f')}% RSS {fmt(r.get('rss_mb'), '.1f')} MB "
                f"(peak {fmt(r.get('rss_peak_mb'), '.1f')}), {r.get('threads', '-')} threads")  # fmt: skip
    return ""


HEADLINE = {"w1": "jobs_per_s", "w2": "jobs_per_s", "w3": "ratio_to_ideal", "w4": "p99_ms",
            "w4-inproc": "p99_ms", "lateness": "p99_ms", "w5a": "steady_jobs_per_s", "w5b": "steady_jobs_per_s",
            "idle": "cpu_percent", "mem": "store_bytes_per_queued_job"}  # fmt: skip


def aggregate(rows: list[dict]) -> list[dict]:
    """Rows of the same workload, size and setting (from --repeat, or several --run-id) become
    one row of medians, with `runs` and the headline figure's `range` (min, max)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["workload"], r["n"], r.get("setting", "")), []).append(r)
    out = []
    for rs in groups.values():
        ok = [r for r in rs if r.get("status") == "ok"]
        if len(rs) == 1 or not ok:
            out.append(rs[-1])
            continue
        m = dict(ok[-1])
        for k, v in ok[-1].items():
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "n":
                vals = [r[k] for r in ok if isinstance(r.get(k), int | float)]
                m[k] = round(statistics.median(vals), 3)
        head = HEADLINE.get(m["workload"])
        vals = [r[head] for r in ok if r.get(head) is not None]
        m["runs"] = len(ok)
        m["range"] = [min(vals), max(vals)] if vals else None
        m["note"] = "; ".join(dict.fromkeys(r["note"] for r in rs if r.get("note")))
        if len(ok) < len(rs):
            m["note"] = f"{len(rs) - len(ok)} of {len(rs)} runs failed; " + m["note"]
        out.append(m)
    return out


def table(rows: list[dict]) -> str:
    """One row per workload (medians when a workload ran several times)."""
    rows = aggregate(rows)
    multi = any(r.get("runs", 1) > 1 for r in rows)
    hdr = ["workload", "n", "status", "seconds", "jobs/s", "steady/s", "startup s", "p50 ms",
           "p99 ms", "worker CPU us/job", "worker CPU util", "details", "setting"]  # fmt: skip
    server = any(r.get("redis_cpu_util", r.get("db_cpu_util")) is not None for r in rows)
    if server:
        hdr[11:11] = ["server CPU us/job", "server CPU util"]  # redis-server or PostgreSQL
    lines = []
    for r in rows:
        ok = r.get("status") == "ok"
        lines.append([
            r["workload"], fmt(r["n"]), r.get("status", "?") + (" (noisy)" if "noisy" in r.get("note", "") else ""),
            fmt(r.get("seconds"), ".3f") if ok else "-",
            fmt(r.get("jobs_per_s")) if ok else "-",
            fmt(r.get("steady_jobs_per_s")) if ok else "-",
            fmt(r.get("startup_s"), ".3f") if ok else "-",
            fmt(r.get("p50_ms"), ".2f"), fmt(r.get("p99_ms"), ".2f"),
            fmt(r.get("worker_cpu_us_per_job"), ",.1f") if r["workload"] != "idle" else "-",
            fmt(r.get("worker_cpu_util"), ".2f"),
            extra(r) if ok else (r.get("note") or "")[:80], r.get("setting", ""),
        ])  # fmt: skip
        if server:
            per_job = r.get("redis_cpu_us_per_job", r.get("db_cpu_us_per_job"))
            lines[-1][11:11] = [
                fmt(per_job, ",.1f") if r["workload"] != "idle" else "-",
                fmt(r.get("redis_cpu_util", r.get("db_cpu_util")), ".2f"),
            ]
        if multi:
            rng = r.get("range")
            spec = (
                ".2f"
                if HEADLINE.get(r["workload"]) in ("ratio_to_ideal", "p99_ms", "cpu_percent")
                else ",.0f"
            )
            lines[-1][2:2] = [str(r.get("runs", 1)),
                              f"{fmt(rng[0], spec)}-{fmt(rng[1], spec)}" if rng else "-"]  # fmt: skip
    if multi:
        hdr[2:2] = ["runs", "range (headline)"]
    return _render(hdr, lines)


def peer_row(rows: list[dict]) -> str:
    """The same columns as the peers' tables (../shared/peers/sql/README.md)."""
    d = {r["workload"]: r for r in aggregate(rows) if r.get("status") == "ok"}

    def g(wl, key, spec=",.0f"):
        return fmt(d[wl].get(key), spec) if wl in d else "n/a"

    hdr = ["system", "backend", "W1 enq/s", "W1 prod CPU us/job", "W2 jobs/s", "W2 steady/s",
           "W2 startup s", "W2 worker CPU us/job", "W3 s (x ideal)", "W4 p50 ms", "W4 p99 ms",
           "W5 small steady/s", "W5 big steady/s"]  # fmt: skip
    redis = any(r.get("backend") == "redis" for r in rows)
    w5a = d.get("w5a", {}).get("n")
    w5b = d.get("w5b", {}).get("n")
    if w5a:
        hdr[-2] = f"W5 {w5a:,} steady/s"
    if w5b:
        hdr[-1] = f"W5 {w5b:,} steady/s"
    some = rows[0]
    line = [
        f"conveyor {next((r['version'] for r in rows if r.get('version')), '')}",
        some.get("backend", "-"),
        g("w1", "jobs_per_s"), g("w1", "producer_cpu_us_per_job"),
        g("w2", "jobs_per_s"), g("w2", "steady_jobs_per_s"), g("w2", "startup_s", ".2f"),
        g("w2", "worker_cpu_us_per_job"),
        f"{g('w3', 'seconds', '.2f')} ({g('w3', 'ratio_to_ideal', '.2f')}x)" if "w3" in d else "n/a",
        g("w4", "p50_ms", ".2f"), g("w4", "p99_ms", ".2f"),
        g("w5a", "steady_jobs_per_s"), g("w5b", "steady_jobs_per_s"),
    ]  # fmt: skip
    if redis:
        hdr[8:8] = ["W2 redis CPU us/job"]
        line[8:8] = [g("w2", "redis_cpu_us_per_job")]
    if "mem" in d:
        hdr.append(f"bytes/queued job ({d['mem']['n']:,})")
        line.append(g("mem", "store_bytes_per_queued_job", ",.1f"))
    return _render(hdr, [line])


def mem_report(rows: list[dict]) -> str:
    """The Redis memory breakdown of `mem` rows (MEMORY USAGE per kind of key)."""
    out = []
    for r in rows:
        b = r.get("redis_memory")
        if r["workload"] != "mem" or not b:
            continue
        n = r["n"]
        out.append(f"Redis memory per queued job, {n:,} jobs (enqueue_many per "
                   f"{r.get('setting', '').split('per ')[-1].split(' jobs')[0]}): "
                   f"{r['redis_bytes_per_queued_job']:,.1f} B = (used_memory "
                   f"{r['redis_used_memory_after']:,} - {r['redis_used_memory_before']:,}) / {n:,}")  # fmt: skip
        hdr = ["keys", "count", "bytes", "bytes/job", "encoding", "notes"]
        j = b["job_hash"]
        lines = [
            ["job hash j:<id>", fmt(j["keys"]), fmt(j["bytes"]), fmt(j["per_job"], ".1f"),
             j["encoding"], f"{j['fields']} fields, key {j['key_len']} chars, "
             f"MEMORY USAGE of {j['sampled']} sampled: {j['min']}-{j['max']} B"],
        ]  # fmt: skip
        for name, label in (("ready_zset", "ready (zset)"), ("events_stream", "events (stream)")):
            e = b[name]
            lines.append([label, "1", fmt(e["bytes"]), fmt(e["per_job"], ".1f"), e["encoding"],
                          f"{e['len']:,} entries"])  # fmt: skip
        bs = b["batch_sets"]
        lines.append(["batch sets b:<batch>", fmt(bs["keys"]), fmt(bs["bytes"]),
                      fmt(bs["per_job"], ".1f"), bs["encoding"] or "-",
                      f"{bs['members']:,} members"])  # fmt: skip
        o = b["other_keys"]
        lines.append(["other keys", fmt(len(o["keys"])), fmt(o["bytes"]),
                      fmt(o["bytes"] / n, ".1f"), "-", " ".join(o["keys"])[:70]])  # fmt: skip
        u = b["unaccounted"]
        ms = b.get("memory_stats", {})
        lines.append(["unaccounted", "-", fmt(u["bytes"]), fmt(u["per_job"], ".1f"), "-",
                      f"main key table {fmt(ms.get('overhead.hashtable.main'))} B; allocator, buffers"])  # fmt: skip
        out.append(_render(hdr, lines))
        out.append(f"example job hash: {json.dumps(j['example'])}")
    return "\n".join(out)


def load_rows(path: str, run_ids: list[str]) -> list[dict]:
    rows = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    rids = run_ids or [rows[-1]["run_id"]]
    picked = [r for rid in rids for r in rows if r.get("run_id") == rid]
    return sorted(picked, key=lambda r: (ORDER.index(r["workload"]), r["n"]))


# -- main ---------------------------------------------------------------------------------------------


def parse_list(values: list[str]) -> list[str]:
    out = []
    for v in values:
        for w in v.split(","):
            w = w.strip().lower()
            if not w:
                continue
            if w == "w5":
                out += ["w5a", "w5b"]
            elif w in ("w4i", "inproc"):
                out.append("w4-inproc")
            elif w in ORDER:
                out.append(w)
            else:
                raise SystemExit(f"unknown workload {w!r}; known: {', '.join(ORDER)}, w5")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--backend", default="sqlite", choices=sorted(TARGETS))
    ap.add_argument("--quick", action="store_true", help="small N, whole run < 1 minute")
    ap.add_argument("--only", action="append", default=[],
                    help=f"workloads, comma separated or repeated: {', '.join(ORDER)}, w5 (= w5a,w5b)")  # fmt: skip
    ap.add_argument("--backlog", type=int, help="W5b backlog (default 200,000; --quick 20,000)")
    ap.add_argument("--small-backlog", type=int, help="W5a backlog (default 2,000; --quick 1,000)")
    ap.add_argument("--mem-n", type=int, help="mem: jobs enqueued (default 1,000,000; --quick "
                    "100,000; the quick run includes mem only with --only mem)")  # fmt: skip
    ap.add_argument(
        "--measure", type=int, help="W5b: completions timed (default 20,000; quick 5,000)"
    )
    ap.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                    help=f"worker concurrency for W2/W4/W5/idle (default {DEFAULT_CONCURRENCY})")  # fmt: skip
    ap.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                    help=f"W1 enqueue_many chunk (default {DEFAULT_CHUNK:,})")  # fmt: skip
    ap.add_argument(
        "--idle-seconds", type=float, help="idle: measuring window (default 5; quick 2)"
    )
    ap.add_argument("--timeout", type=float, default=120.0, help="per workload, seconds")
    ap.add_argument("--tune", action="store_true",
                    help=f"W1 per chunk {TUNE_CHUNKS} and W2 per concurrency {TUNE_CONCURRENCY} "
                    "-> results/tuning/<date>.jsonl")  # fmt: skip
    ap.add_argument("--prometheus", action="store_true",
                    help="the worker runs with conveyor.metrics.PrometheusHook (served on a port)")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=1, help="run the selection this many times")
    ap.add_argument("--wait-quiet", type=float, metavar="S",
                    help="before each workload wait up to S s until other processes use < 0.3 "
                    "cores (default 60 in full mode, 0 with --quick)")  # fmt: skip
    ap.add_argument("--pyspy", metavar="DIR", help="profile the worker process with py-spy "
                    "(raw collapsed stacks in DIR); distorts the figures, not for the table")  # fmt: skip
    ap.add_argument("--pyspy-flags", default="", metavar="FLAGS",
                    help="extra py-spy record flags, e.g. '--native' (C frames: hiredis) or "
                    "'--idle' (include waiting in epoll)")  # fmt: skip
    ap.add_argument("--results", default=str(HERE / "results"), help="folder for <date>.jsonl")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (worker logs)")
    ap.add_argument("--table", metavar="JSONL", help="only re-print the table of a results file")
    ap.add_argument("--run-id", action="append", default=[], help="with --table: run id(s)")
    args = ap.parse_args()

    if args.table:
        rows = load_rows(args.table, args.run_id)
        print(f"run {rows[0].get('run_id')} ({rows[0].get('mode')}), {rows[0].get('machine')}")
        print(table(rows))
        if mem_report(rows):
            print()
            print(mem_report(rows))
        if len({(r["workload"], r.get("setting")) for r in rows}) == len(
            {r["workload"] for r in rows}
        ):
            print()
            print(peer_row(rows))
        return

    target = TARGETS[args.backend]()
    mode = "quick" if args.quick else "full"
    sizes = dict(QUICK if args.quick else FULL)
    if args.backlog:
        sizes["w5b"] = args.backlog
    if args.small_backlog:
        sizes["w5a"] = args.small_backlog
    if args.mem_n:
        sizes["mem"] = args.mem_n
    wanted = parse_list(args.only) or [w for w in ORDER if not (args.quick and w in QUICK_OPT_IN)]
    wait = args.wait_quiet if args.wait_quiet is not None else (0.0 if args.quick else 60.0)
    opts = {
        "measure": args.measure or W5_MEASURE[mode], "timeout": args.timeout,
        "concurrency": args.concurrency, "chunk": args.chunk,
        "idle_s": args.idle_seconds or IDLE_S[mode],
        "pyspy": args.pyspy, "pyspy_flags": args.pyspy_flags, "prometheus": args.prometheus,
    }  # fmt: skip
    plan: list[tuple[str, dict]] = []
    if args.tune:
        for c in TUNE_CHUNKS:
            plan.append(("w1", {**opts, "chunk": c}))
        for c in TUNE_CONCURRENCY:
            plan.append(("w2", {**opts, "concurrency": c}))
        res_dir = Path(args.results) / "tuning"
    else:
        plan = [(wl, opts) for wl in ORDER if wl in wanted]
        res_dir = Path(args.results)
    plan = plan * max(1, args.repeat)
    if args.pyspy:
        Path(args.pyspy).mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    res_dir.mkdir(parents=True, exist_ok=True)
    res_file = res_dir / f"{dt.date.today().isoformat()}.jsonl"
    rows: list[dict] = []
    started = time.time()

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    py = python_exe()
    try:
        # Fail early (before any waiting) on a backend the bench cannot run yet.
        target.drop(target.fresh(tmp, "probe"))
    except NotImplementedYet as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"--backend {args.backend}: not implemented yet ({exc})", file=sys.stderr)
        raise SystemExit(2) from None
    run_id = dt.datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    machine = machine_info(target)
    commit = git_rev()
    print(f"# run {run_id}  {mode}{'  tune' if args.tune else ''}  commit {commit}  {machine}",
          flush=True)  # fmt: skip
    try:
        for wl, o in plan:
            waited = wait_quiet(wait) if wait > 0 else None
            t0 = time.time()
            r = run_one(py, target, wl, sizes[wl], tmp, o)
            if waited:
                r["waited_for_quiet_s"] = waited
            r.update({"run_id": run_id, "mode": mode, "machine": machine, "commit": commit,
                      "wall_s": round(time.time() - t0, 1)})  # fmt: skip
            if args.tune:
                r["tuning"] = (
                    {"chunk": o["chunk"]} if wl == "w1" else {"concurrency": o["concurrency"]}
                )
            r = scrub(r, tmp)
            rows.append(r)
            with open(res_file, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"{wl:9s} {r.get('status'):7s} n={r['n']:<8} s={r.get('seconds')} "
                  f"jobs/s={r.get('jobs_per_s')} steady={r.get('steady_jobs_per_s')} "
                  f"p50={r.get('p50_ms')} p99={r.get('p99_ms')} startup={r.get('startup_s')} "
                  f"cpu_us/job={r.get('worker_cpu_us_per_job')}"
                  + (f" redis_us/job={r.get('redis_cpu_us_per_job')}" if "redis_cpu_util" in r else "")
                  + (f" db_us/job={r.get('db_cpu_us_per_job')}" if "db_cpu_util" in r else "")
                  + (f" B/job={r.get('store_bytes_per_queued_job')}" if wl == "mem" else "")
                  + f" [{r['wall_s']}s] "
                  f"{r.get('setting', '')} {r.get('note', '')}", flush=True)  # fmt: skip
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    finally:
        reap_workers(tmp)
        target.close()
        if args.keep_tmp:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if rows:
        print()
        print(table(rows))
        if mem_report(rows):
            print()
            print(mem_report(rows))
        if not args.tune:
            print()
            print(peer_row(rows))
        print()
        for r in rows:
            print(json.dumps(r))
        print(
            f"\n{len(rows)} results appended to {os.path.relpath(res_file)}; "
            f"total {time.time() - started:.0f}s"
        )


if __name__ == "__main__":
    main()
