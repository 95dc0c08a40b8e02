"""The chaos history checker on hand-made histories: each violation it exists for is detected,
and the faults that explain a duplicate execution explain only what they should."""

from __future__ import annotations

from typing import Any

from bench.chaos.history import Final, Limits, build_history, check, whole_batches


def ack(job: str, t: float = 0.0, *, p: int = 5, due: float | None = None) -> dict[str, Any]:
    return {"k": "ack", "job": job, "q": "chaos", "p": p, "due": t if due is None else due, "t": t}


def run(job: str, tok: int, pid: int, start: float, end: float | None = None,
        claimed: float | None = None, kind: str = "finish") -> list[dict[str, Any]]:  # fmt: skip
    out = [{"k": "start", "job": job, "tok": tok, "pid": pid, "t": start,
            "c": start if claimed is None else claimed}]  # fmt: skip
    if end is not None:
        out.append({"k": kind, "job": job, "tok": tok, "pid": pid, "t": end})
    return out


def checked(records: list[dict[str, Any]], final: dict[str, Final], **kw: Any) -> Any:
    return check(build_history(records), final, **kw)


def test_a_clean_history_has_no_violation() -> None:
    # Given a job acknowledged, run once and completed by that run
    recs = [ack("a"), *run("a", 1, 10, 0.1, 0.2)]
    # Then the checker finds nothing
    rep = checked(recs, {"a": Final("completed", token=1)})
    assert rep.ok, rep.violations()
    assert rep.duplicates == 0


def test_an_acknowledged_job_not_completed_or_gone_is_lost() -> None:
    # Given three acknowledged jobs: one left queued, one failed, one the backend no longer has
    recs = [ack("a"), ack("b"), ack("c"), *run("b", 1, 10, 0.1, 0.2)]
    rep = checked(recs, {"a": Final("queued"), "b": Final("failed", token=1)})
    # Then all three are lost
    assert len(rep.lost) == 3
    # And a job expected to fail (the poison job) is not
    rep = checked([ack("p")], {"p": Final("failed")}, expect={"p": "failed"})
    assert rep.lost == []


def test_a_completed_job_needs_a_finish_record_of_its_final_token() -> None:
    # Given a job the backend says token 2 completed, but only token 1 ever finished
    recs = [ack("a"), *run("a", 1, 10, 0.1, 0.2), *run("a", 2, 11, 0.3)]
    kills = [{"k": "kill", "pid": 10, "t": 0.25}]
    rep = checked(recs + kills, {"a": Final("completed", token=2)})
    # Then it is reported
    assert rep.completed_unfinished == ["a (token 2)"]


def test_a_duplicate_is_explained_by_a_kill_of_its_process_while_it_ran() -> None:
    # Given a run killed mid-way and a second run that completed the job
    recs = [ack("a"), *run("a", 1, 10, 1.0), *run("a", 2, 11, 4.0, 4.1),
            {"k": "kill", "pid": 10, "t": 1.5}]  # fmt: skip
    rep = checked(recs, {"a": Final("completed", token=2)})
    # Then it is a duplicate the kill explains, and the job's recovery took 2.5 s
    assert rep.ok, rep.violations()
    assert (rep.duplicates, rep.excused["kill"], rep.kills_with_duplicates) == (1, 1, 1)
    assert rep.recovery == [2.5]


def test_a_death_recorded_twice_is_one_kill_at_the_earlier_time() -> None:
    # Given a run that finished (not yet acknowledged) 0.5 s before its worker killed itself,
    # the worker's own record of that death, and the reaper's record 1.5 s later
    recs = [ack("a"), *run("a", 1, 10, 1.0, 1.1), *run("a", 2, 11, 4.0, 4.1),
            {"k": "kill", "pid": 10, "t": 1.6}, {"k": "kill", "pid": 10, "t": 3.1}]  # fmt: skip
    rep = checked(recs, {"a": Final("completed", token=2)})
    # Then the death is one kill, at the earlier time, and it explains the run
    assert rep.ok, rep.violations()
    assert build_history(recs).faults.kills == [(10, 1.6)]


def test_a_duplicate_without_a_fault_is_a_violation() -> None:
    # Given a job run twice, no fault anywhere
    recs = [ack("a"), *run("a", 1, 10, 1.0), *run("a", 2, 11, 4.0, 4.1)]
    rep = checked(recs, {"a": Final("completed", token=2)})
    assert len(rep.unexcused) == 1 and not rep.ok
    # Given a kill of the other process, or a kill of this one before the run began
    kills = [{"k": "kill", "pid": 11, "t": 2.0}, {"k": "kill", "pid": 10, "t": 0.5}]
    rep = checked(recs + kills, {"a": Final("completed", token=2)})
    # Then neither explains it, and the violation shows the times and faults to judge by
    assert len(rep.unexcused) == 1
    shown = rep.unexcused[0]
    assert "token 2 pid 11 claimed 4.000" in shown and "pid 11 at 2.000" in shown


def test_a_run_that_finished_long_before_the_kill_is_not_explained_by_it() -> None:
    # Given a run that finished at 1.1 (acknowledged within ack_slack) and a kill at 5.0
    recs = [ack("a"), *run("a", 1, 10, 1.0, 1.1), *run("a", 2, 11, 6.0, 6.1),
            {"k": "kill", "pid": 10, "t": 5.0}]  # fmt: skip
    rep = checked(recs, {"a": Final("completed", token=2)}, limits=Limits(ack_slack=1.0))
    assert len(rep.unexcused) == 1
    # But a kill right after its finish (the acknowledgement may not have gone out) does
    recs[-1]["t"] = 1.5
    rep = checked(recs, {"a": Final("completed", token=2)}, limits=Limits(ack_slack=1.0))
    assert rep.ok, rep.violations()


def test_a_duplicate_is_explained_by_a_backend_restart_it_overlapped() -> None:
    recs = [ack("a"), *run("a", 1, 10, 1.0, 1.2), *run("a", 2, 10, 5.0, 5.1)]
    window = {"k": "restart", "t0": 1.5, "t1": 2.0}
    rep = checked([*recs, window], {"a": Final("completed", token=2)})
    assert rep.ok and rep.excused["restart"] == 1
    # A restart long after the run explains nothing
    rep = checked([*recs, window | {"t0": 3.5, "t1": 4.0}], {"a": Final("completed", token=2)})
    assert len(rep.unexcused) == 1


def test_a_duplicate_is_explained_by_a_stop_only_if_the_run_was_handed_back_unfinished() -> None:
    stop = {"k": "stop", "pid": 10, "t": 2.0}
    aborted = [ack("a"), *run("a", 1, 10, 1.0, 2.5, kind="abort"), *run("a", 2, 11, 3.0, 3.1)]
    rep = checked([*aborted, stop], {"a": Final("completed", token=2)})
    assert rep.ok and rep.excused["stop"] == 1
    # A run that finished and still ran again is not explained by the stop
    finished = [ack("a"), *run("a", 1, 10, 1.0, 2.5), *run("a", 2, 11, 3.0, 3.1)]
    rep = checked([*finished, stop], {"a": Final("completed", token=2)})
    assert len(rep.unexcused) == 1


def test_a_start_before_the_due_time_is_reported() -> None:
    recs = [ack("a", 0.0, due=2.0), *run("a", 1, 10, 1.5, 1.6)]
    rep = checked(recs, {"a": Final("completed", token=1)})
    assert len(rep.early) == 1
    rep = checked([ack("a", 0.0, due=1.0), *run("a", 1, 10, 1.5, 1.6)],
                  {"a": Final("completed", token=1)})  # fmt: skip
    assert rep.early == []


def test_a_claim_while_a_higher_priority_job_waited_longer_than_a_round_is_an_inversion() -> None:
    # Given a high-priority job ready at 0 and first claimed at 2, and a low one claimed at 1
    recs = [ack("hi", 0.0, p=10), ack("lo", 0.0, p=1),
            *run("hi", 1, 10, 2.0, 2.1), *run("lo", 1, 10, 1.0, 1.1)]  # fmt: skip
    final = {"hi": Final("completed", token=1), "lo": Final("completed", token=1)}
    rep = checked(recs, final, limits=Limits(window=0.1))
    # Then the low claim is an inversion
    assert len(rep.inversions) == 1 and "lo" in rep.inversions[0]
    # But within the window (the claim was already under way), or once the high job was
    # claimed, or for a job of equal priority, it is not
    assert checked(recs, final, limits=Limits(window=1.5)).inversions == []
    early_hi = [ack("hi", 0.0, p=10), ack("lo", 0.0, p=1),
                *run("hi", 1, 10, 0.05, 0.1), *run("lo", 1, 10, 1.0, 1.1)]  # fmt: skip
    assert checked(early_hi, final).inversions == []
    same = [ack("hi", 0.0, p=1), *recs[1:]]
    assert checked(same, final).inversions == []


def test_a_delayed_job_is_ready_only_from_its_due_time() -> None:
    # Given a high-priority job due at 5 and a low one claimed at 1: no inversion
    recs = [ack("hi", 0.0, p=10, due=5.0), ack("lo", 0.0, p=1),
            *run("hi", 1, 10, 5.0, 5.1), *run("lo", 1, 10, 1.0, 1.1)]  # fmt: skip
    final = {"hi": Final("completed", token=1), "lo": Final("completed", token=1)}
    assert checked(recs, final).inversions == []


def test_after_a_backend_restart_jobs_are_ready_again_from_the_first_claim_round() -> None:
    # Given a backend down from 1 to 3, workers claiming again from 5 (reconnecting), a high
    # job ready since 0.5, and a low one taken by another worker's claim in that first round
    restart = {"k": "restart", "t0": 1.0, "t1": 3.0}
    recs = [restart, ack("hi", 0.5, p=10), ack("lo", 0.5, p=1),
            *run("lo", 1, 11, 5.02, 5.1, claimed=5.0), *run("hi", 1, 10, 5.06, 5.1, claimed=5.05)]  # fmt: skip
    final = {"hi": Final("completed", token=1), "lo": Final("completed", token=1)}
    # Then that round is no inversion (no claim could run while the backend was away: the
    # first round after it races like the round after an enqueue)
    assert checked(recs, final, limits=Limits(window=0.1)).inversions == []
    # But a low claim well after the first round, while the high job still waits, is one
    late = [restart, ack("hi", 0.5, p=10), ack("lo", 0.5, p=1), ack("lo2", 0.5, p=1),
            *run("lo", 1, 11, 5.02, 5.1, claimed=5.0), *run("lo2", 1, 11, 5.5, 5.6),
            *run("hi", 1, 10, 6.0, 6.1)]  # fmt: skip
    final["lo2"] = Final("completed", token=1)
    rep = checked(late, final, limits=Limits(window=0.1))
    assert len(rep.inversions) == 1 and "lo2" in rep.inversions[0]
    # And a low claim before the outage, while the high job had waited, still is one
    before = [restart, ack("hi", 0.0, p=10), ack("lo", 0.0, p=1),
              *run("lo", 1, 11, 0.5, 0.6), *run("hi", 1, 10, 5.06, 5.1, claimed=5.05)]  # fmt: skip
    rep = checked(before, {"hi": final["hi"], "lo": final["lo"]}, limits=Limits(window=0.1))
    assert len(rep.inversions) == 1 and "lo " in rep.inversions[0]


def test_batches_are_whole_or_absent() -> None:
    begins = [{"k": "begin", "b": "x", "n": 3}, {"k": "begin", "b": "y", "n": 3},
              {"k": "begin", "b": "z", "n": 3}]  # fmt: skip
    assert whole_batches(begins, {"x": 3, "y": 0}) == []
    assert whole_batches(begins, {"x": 3, "y": 2}) == ["batch y: 2 of 3 jobs stored"]


def test_the_backends_due_time_counts_when_a_retried_enqueue_stored_the_job_later() -> None:
    # Given a high job acknowledged as due at 1.0 whose backend due time is 3.0 (the producer's
    # first try failed, the retry stored it later), and a low job claimed at 2.0
    recs = [ack("hi", 0.5, p=10, due=1.0), ack("lo", 0.0, p=1),
            *run("hi", 1, 10, 3.0, 3.1), *run("lo", 1, 10, 2.0, 2.1)]  # fmt: skip
    final = {"hi": Final("completed", token=1, scheduled_for=3.0),
             "lo": Final("completed", token=1)}  # fmt: skip
    # Then the low claim is no inversion; without the backend's due time it would be one
    assert checked(recs, final).inversions == []
    final["hi"].scheduled_for = None
    assert len(checked(recs, final).inversions) == 1


def test_a_job_whose_first_claim_left_no_record_is_not_counted_as_waiting() -> None:
    # Given a high job first seen with token 2 (a killed worker claimed it, never started it)
    recs = [ack("hi", 0.0, p=10), ack("lo", 0.0, p=1),
            *run("hi", 2, 11, 2.0, 2.1), *run("lo", 1, 10, 1.0, 1.1)]  # fmt: skip
    final = {"hi": Final("completed", token=2), "lo": Final("completed", token=1)}
    # Then the low claim at 1.0 is no inversion (when the high one was claimed is unknown)
    assert checked(recs, final).inversions == []
    # But a high job never claimed at all (token 0) waited for good
    never = [ack("hi", 0.0, p=10), ack("lo", 0.0, p=1), *run("lo", 1, 10, 1.0, 1.1)]
    rep = checked(never, {"hi": Final("queued"), "lo": Final("completed", token=1)})
    assert len(rep.inversions) == 1
