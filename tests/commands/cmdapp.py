"""Command tasks run by real worker processes in test_command_jobs.py."""

from __future__ import annotations

import os
import sys

from conveyor import Conveyor

app = Conveyor(os.environ.get("CONVEYOR_URL", "sqlite:///unused.db"))
PY = [sys.executable, "-m", "tests.commands.scripts"]
CWD = os.environ.get("CMD_CWD")

app.command("flood", [*PY, "flood"], cwd=CWD, env=["PATH", "PYTHONPATH"])
app.command("family", [*PY, "family", "{pidfile}"], cwd=CWD, env=["PATH", "PYTHONPATH"],
            stdin=False, retries=0)  # fmt: skip
