"""The README's "Ten lines" example, as a newcomer uses it: run as a script it prints the job's
result; imported (``conveyor worker example:app`` does that) it only defines the app."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _ten_lines() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Ten lines", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "no python block under 'Ten lines'"
    return found.group(1)


def _python(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_example_runs_as_a_script_and_not_when_imported(tmp_path: Path) -> None:
    # Given the README's example saved as a module
    (tmp_path / "example.py").write_text(_ten_lines())
    # When a worker (or anything else) imports it
    imported = _python(tmp_path, "-c", "import example; print(type(example.app).__name__)")
    # Then it only defines the app: no job ran, no database was created
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "Conveyor"
    assert not (tmp_path / "conveyor.db").exists()
    # And run as a script it enqueues, runs and prints the job's result
    ran = _python(tmp_path, "example.py")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "{'summary': '...'}"


def test_the_human_in_the_loop_example_runs(tmp_path: Path) -> None:
    # Given the README's "Human in the loop" example saved as a script
    section = (ROOT / "README.md").read_text().split("## Human in the loop", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "no python block under 'Human in the loop'"
    (tmp_path / "review.py").write_text(found.group(1))
    # When it runs: then it prints the prompt, and the result after the resume
    ran = _python(tmp_path, "review.py")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [
        "{'question': 'publish q3-report?'}",
        "{'doc': 'q3-report', 'published': True, 'by': 'ana'}",
    ]
