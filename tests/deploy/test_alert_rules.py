"""deploy/prometheus/alerts.yml: valid rules, and each alert fires (and stays quiet) as its
promtool unit tests (alerts_test.yml) say. promtool ships in Debian's ``prometheus`` package:
missing locally skips, missing under CI=true fails."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.servers import require_binary

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_binary("promtool")
    return subprocess.run([promtool, *args], cwd=RULES, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_the_alert_rules_are_valid() -> None:
    out = _promtool("check", "rules", "alerts.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 7 rules found" in out.stdout


def test_the_alert_rules_fire_as_their_unit_tests_say() -> None:
    out = _promtool("test", "rules", "alerts_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_metric_the_rules_use_is_one_conveyor_exports() -> None:
    # Given the names a worker's hook and the exporter serve (a snapshot with one breaker)
    import re
    import time

    from conveyor.backends.base import QueueStats
    from conveyor.metrics import BackendCollector, PrometheusHook
    from conveyor.metrics.exporter import Snapshot

    collector = BackendCollector()
    st = QueueStats("q", {"queued": 1}, limits=[{"name": "g", "kind": "brk", "state": "open"}])
    collector.snapshot, collector.up = Snapshot({"q": st}, [], time.time()), True
    served = {s.name for m in collector.collect() for s in m.samples}
    served |= {m.name + "_total" if m.type == "counter" else m.name
               for m in PrometheusHook().registry.collect()}  # fmt: skip
    # Then every conveyor_* name in the rules is served
    used = set(re.findall(r"\bconveyor_[a-z_]+", (RULES / "alerts.yml").read_text()))
    assert used and used <= served, used - served
