"""The hot path costs O(log n): every statement of claim, promotion, recovery and
acknowledgement is an index search, never a scan of ``jobs`` or a sort.

Plans are read with ``EXPLAIN QUERY PLAN`` on a file made through the app, with jobs in every
state, so the partial indexes have something to choose from.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor import Conveyor
from conveyor.backends.base import (
    ClaimParams,
    EventFilter,
    ListParams,
    NewJob,
    Outcome,
    OutcomeKind,
)
from conveyor.backends.sqlite import attempts, maintenance, ops
from conveyor.backends.sqlite import maintenance as m
from conveyor.job import JobState, new_id

_INNER_SELECT = re.compile(r"WHERE seq IN \((SELECT .*?)\) RETURNING", re.S)
PROMOTE = (
    "UPDATE jobs SET status = 'queued' "
    "WHERE status = 'scheduled' AND scheduled_for <= ? RETURNING queue"
)
RECOVER = (
    "SELECT id, queue, task, tenant, stalls, max_stalls, attempt FROM jobs "
    "WHERE status = 'active' AND lease_expires_at < ?"
)


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    """A conveyor file with jobs queued, scheduled, active, completed and failed in 3 queues."""
    path = tmp_path / "plans.db"
    app = Conveyor(f"sqlite:///{path}")
    for q in ("a", "b", "c"):

        @app.task(queue=q, name=f"t_{q}")
        async def t(n: int) -> None:
            return None

    try:
        for q in ("a", "b", "c"):
            await app.enqueue_many([(f"t_{q}", {"n": i}) for i in range(300)])
            await app.enqueue_many([(f"t_{q}", {"n": i}) for i in range(100)], delay=3600)
            await app.enqueue_many(
                [{"task": f"t_{q}", "payload": {"n": i}, "idempotency_key": f"k{i}",
                  "priority": i % 20} for i in range(50)]
            )  # fmt: skip
            claimed = await app.backend.claim_jobs(ClaimParams([q], 100, "w"))
            await app.backend.finish_jobs(
                "w",
                [Outcome(j.id, j.token, OutcomeKind.COMPLETED if k % 2 else OutcomeKind.FAILED,
                         error={"type": "E", "message": "m"}) for k, j in enumerate(claimed.jobs[:60])],
            )  # fmt: skip
    finally:
        await app.close()
    return path


@pytest.fixture
def conn(db: Path) -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(db, isolation_level=None)
    yield c
    c.close()


def plan(conn: sqlite3.Connection, sql: str, args: object = ()) -> list[str]:
    return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args)]  # type: ignore[arg-type]


def assert_indexed(steps: list[str], index: str | None = None) -> None:
    text = "\n".join(steps)
    assert not any(re.match(r"SCAN jobs\b", s) for s in steps), text
    assert "USE TEMP B-TREE" not in text, text
    if index is not None:
        assert f"USING INDEX {index}" in text, text


def test_claim_select_uses_the_ready_index_in_order(conn: sqlite3.Connection) -> None:
    # Given the claim statement's inner SELECT (highest priority, then FIFO, of one queue)
    match = _INNER_SELECT.search(ops._CLAIM_ONE)
    assert match is not None
    inner = match.group(1)
    # Then it walks jobs_ready in index order: no scan, no sort
    assert_indexed(plan(conn, inner, {"queue": "a", "limit": 10}), "jobs_ready")


def test_claim_update_uses_the_ready_index_and_the_rowid(conn: sqlite3.Connection) -> None:
    steps = plan(conn, ops._CLAIM_ONE, {"queue": "a", "limit": 10, "now": 1.0, "worker": "w"})
    assert_indexed(steps, "jobs_ready")
    assert any("INTEGER PRIMARY KEY" in s for s in steps), steps


def test_promotion_uses_the_scheduled_index(conn: sqlite3.Connection) -> None:
    assert_indexed(plan(conn, PROMOTE, (1e12,)), "jobs_scheduled")


def test_lease_recovery_uses_the_lease_index(conn: sqlite3.Connection) -> None:
    assert_indexed(plan(conn, RECOVER, (1e12,)), "jobs_leases")


def test_every_statement_of_the_hot_path_is_indexed(conn: sqlite3.Connection) -> None:
    # Given every statement the real transition functions run (traced, with their values)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    now = 2e9  # far future: everything scheduled is due, every lease expired
    conn.execute("BEGIN IMMEDIATE")
    try:
        ops.enqueue(conn, 1.0, [
            NewJob(new_id(), "a", "t_a", "{}", 5, 1, 3, None, 30.0, idempotency_key="k1"),
            NewJob(new_id(), "a", "t_a", "{}", 5, 1, 3, None, 30.0, idempotency_key="fresh"),
            NewJob(new_id(), "a", "t_a", "{}", 5, 1, 3, None, 30.0, idempotency_key="k1",
                   tenant="acme"),
            NewJob(new_id(), "b", "t_b", "{}", 5, 1, 3, None, 30.0, delay=10),
        ])  # fmt: skip
        jobs = ops.claim(conn, 1.0, ClaimParams(["a"], 5, "w2")).jobs
        jobs += ops.claim(conn, 1.0, ClaimParams(["b", "c"], 5, "w2")).jobs
        attempts.finish(conn, 1.0, "w2", [
            Outcome(jobs[0].id, jobs[0].token, OutcomeKind.COMPLETED, result=1),
            Outcome(jobs[1].id, jobs[1].token, OutcomeKind.RETRY, retry_in=5,
                    error={"type": "E", "message": "m"}),
            Outcome(jobs[2].id, jobs[2].token, OutcomeKind.FAILED,
                    error={"type": "E", "message": "m"}),
        ])  # fmt: skip
        attempts.extend(conn, 1.0, "w2", [(j.id, j.token) for j in jobs[3:]])
        attempts.set_progress(conn, 1.0, jobs[3].id, jobs[3].token, "w2", {"percent": 5})
        ops.claim(conn, now, ClaimParams(["a"], 1, "w3"))  # promotes every scheduled job
        attempts.recover(conn, now)
        ops.next_due(conn)
        ops.get(conn, jobs[0].id)
    finally:
        conn.set_trace_callback(None)
        conn.execute("ROLLBACK")
    # Then none of those touching 'jobs' scans it or sorts in a temp b-tree
    on_jobs = [s for s in statements if re.search(r"\bjobs\b", s) and not s.startswith("BEGIN")]
    assert len(on_jobs) >= 10
    for sql in on_jobs:
        assert_indexed(plan(conn, sql))


def test_every_statement_of_the_flow_control_path_is_indexed(conn: sqlite3.Connection) -> None:
    # Given every statement of enqueue, claim, finish, release and recovery of limited jobs
    from conveyor.limits import Concurrency, FlowRules, RateLimit, flow_of

    rules = FlowRules("t_a", (RateLimit("100/s", key="k", burst=5), Concurrency(3)))

    def limited(i: int) -> NewJob:
        gates = rules.gates({"k": f"key{i % 3}"}, None)
        return NewJob(new_id(), "f", "t_a", "{}", 5, 2, 3, None, 30.0, flow=flow_of(gates),
                      gates=gates)  # fmt: skip

    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    conn.execute("BEGIN IMMEDIATE")
    try:
        ops.enqueue(conn, 1.0, [limited(i) for i in range(30)])
        jobs = ops.claim(conn, 1.0, ClaimParams(["f"], 10, "w2")).jobs
        assert len(jobs) == 3  # the concurrency cap
        ops.claim(conn, 1.0, ClaimParams(["f", "b"], 10, "w2"))  # refused: set aside
        attempts.finish(conn, 1.0, "w2", [
            Outcome(jobs[0].id, jobs[0].token, OutcomeKind.RETRY, retry_in=0,
                    error={"type": "E", "message": "m"}),
        ])  # fmt: skip
        more = ops.claim(conn, 2.0, ClaimParams(["f"], 10, "w2")).jobs
        attempts.release(conn, 2.0, "w2", [(j.id, j.token) for j in more[:1]])
        ops.cancel(conn, 2.0, jobs[-1].id)
        attempts.recover(conn, 2e9)
        ops.claim(conn, 2e9, ClaimParams(["f", "a"], 10, "w3"))
    finally:
        conn.set_trace_callback(None)
        conn.execute("ROLLBACK")
    # Then none scans jobs, flows or gates, or sorts in a temp b-tree
    touched = [s for s in statements if re.search(r"\b(jobs|flows|gates)\b", s)]
    assert any("flows" in s for s in touched) and any("gates" in s for s in touched)
    for sql in touched:
        steps = plan(conn, sql)
        assert_indexed(steps)
        assert not any(re.match(r"SCAN (flows|gates)\b", s) for s in steps), (sql, steps)


@pytest.mark.parametrize(
    "filters",
    [{}, {"queue": "a"}, {"status": JobState.QUEUED}, {"task": "t_a", "cursor": "500"}],
    ids=["tenant", "and-queue", "and-status", "and-task-cursor"],
)
def test_listing_by_tenant_reads_that_tenants_index_in_order(
    conn: sqlite3.Connection, filters: dict[str, object]
) -> None:
    # Given the statement that lists one tenant's jobs (with other filters too)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    m.list_jobs(conn, ListParams(tenant="acme", limit=10, **filters))  # type: ignore[arg-type]
    conn.set_trace_callback(None)
    [sql] = [s for s in statements if "FROM jobs" in s]
    # Then it walks jobs_tenant newest first: no scan of other tenants' jobs, no sort
    assert_indexed(plan(conn, sql), "jobs_tenant")


@pytest.mark.parametrize(
    ("where", "index"),
    [
        (EventFilter(queue="a"), "events_queue"),
        (EventFilter(tenant="acme"), "events_tenant"),
        (EventFilter(job_id="0" * 26), "events_job"),
    ],
)
def test_filtered_event_reads_walk_an_index(
    conn: sqlite3.Connection, where: EventFilter, index: str
) -> None:
    # Given the statements of a filtered read of the event log (traced, with their values)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        maintenance.read_events(conn, "0", 100, where)
    finally:
        conn.set_trace_callback(None)
    # Then the read walks the filter's index in id order: no scan of the log, no sort
    (select,) = [s for s in statements if "FROM events" in s]
    steps = plan(conn, select)
    assert_indexed(steps, index)
    assert not any(re.match(r"SCAN events\b", s) for s in steps), steps


def test_backpressure_checks_read_the_counts_rows_never_jobs(conn: sqlite3.Connection) -> None:
    # Given every statement an enqueue and a manual retry under max_queued run (traced)
    from conveyor.backends.sqlite import backpressure

    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    conn.execute("BEGIN IMMEDIATE")
    try:
        failed = conn.execute("SELECT id FROM jobs WHERE status = 'failed' LIMIT 1").fetchone()[0]
        ops.enqueue(conn, 1.0, [NewJob(new_id(), "a", "t_a", "{}", 5, 1, 3, None, 30.0),
                                NewJob(new_id(), "b", "t_b", "{}", 5, 1, 3, None, 30.0, delay=9)],
                    {"a": 10_000, "b": 10_000})  # fmt: skip
        ops.retry(conn, 1.0, failed, None, {"a": 10_000, "b": 10_000, "c": 10_000})
        backpressure.recorded(conn)
    finally:
        conn.set_trace_callback(None)
        conn.execute("ROLLBACK")
    # Then the waiting count is a primary-key search of `counts` (two rows), and the limits'
    # record a search of conveyor_meta: neither reads `jobs`
    checks = [s for s in statements if "FROM counts" in s or "conveyor_meta" in s]
    assert len(checks) >= 4, statements
    for sql in checks:
        steps = plan(conn, sql)
        text = "\n".join(steps)
        assert "jobs" not in text and not any(s.startswith("SCAN") for s in steps), text
    assert any(
        "SEARCH counts USING PRIMARY KEY (queue=? AND status=?)" in s
        for s in plan(conn, backpressure.WAITING, ("a",))
    ), plan(conn, backpressure.WAITING, ("a",))
