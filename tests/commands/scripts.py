"""Small programs the command-job tests run (``python -m tests.commands.scripts <name>``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def progress() -> None:
    payload = json.load(sys.stdin)
    for line in ("PROGRESS: 10 reading", "PROGRESS: banana", "PROGRESS: 250 too much",
                 "PROGRESS:", "progress: 20 lowercase", "PROGRESS: 55.5% halfway there",
                 "PROGRESS: 90"):  # fmt: skip
        print(line, flush=True)
        time.sleep(0.02)
    print(json.dumps({"echo": payload}))


def flood() -> None:
    """50 MB on stdout, then a JSON result line."""
    block = ("x" * 1023 + "\n").encode()
    out = sys.stdout.buffer
    for _ in range(50 * 1024):
        out.write(block)
    out.write(b'{"done": true}\n')
    out.flush()


def family() -> None:
    """Starts a grandchild, records both pids, then both sleep (until killed)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    with open(sys.argv[2], "w") as f:
        f.write(f"{os.getpid()} {child.pid}\n")
    time.sleep(300)


def env() -> None:
    keys = ("PATH", "CONVEYOR_TEST_SECRET", "EXTRA", "CONVEYOR_JOB_ID")
    print(json.dumps({k: os.environ.get(k) for k in keys}))


def hog() -> None:
    data = bytearray(400 * 1024 * 1024)  # more than the test's memory limit
    print(len(data))


def spin() -> None:
    while True:
        pass


if __name__ == "__main__":
    globals()[sys.argv[1]]()
