"""Run the translation pipeline end to end, the way a team would deploy it.

1. Make an admin API key with ``conveyor keys create`` and start ``conveyor serve
   examples.translation.pipeline:app --with-worker`` (the HTTP API and a worker in one process).
2. Submit five documents through the HTTP API (`conveyor.Client`); each is a workflow:
   translating → verifying → (reviewing) → publishing → done.
3. Wait until every workflow is done or waits for a reviewer, and show what the reviewers see.
4. Review the flagged ones three ways: approve with ``conveyor resume`` against the server,
   approve with a corrected translation through ``POST /v1/jobs/{id}/resume`` (the client), and
   reject with ``conveyor resume`` on the store directly (``--app``).
5. Print each workflow's steps and outcome, and ``conveyor workflow`` of one; exit 0 only when
   every document ended as expected.

Run it from the repository root: ``python -m examples.translation.run`` (it uses a fresh SQLite
file in a temporary folder unless ``$CONVEYOR_URL`` names a store).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
APP = "examples.translation.pipeline:app"
DOCS = {
    "greeting": "Hello world",
    "status": "The report is ready",
    "billing": "The invoice was paid, thanks",
    "shipping": "Your order has shipped, amigo",  # flagged: approved as it is
    "welcome": "Welcome to the team, newcomer",  # flagged: approved with a correction
    "morning": "Good morning, Gotham",  # flagged: rejected
}
DEADLINE = 60.0


def conveyor(*args: str, env: dict[str, str]) -> str:
    """Run the conveyor CLI; its stdout (raises with its stderr when it fails)."""
    done = subprocess.run([sys.executable, "-m", "conveyor", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"conveyor {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(what: str, check: Any, timeout: float = DEADLINE) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := await check():
            return value
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


async def scenario(url: str, key: str, env: dict[str, str]) -> bool:
    from conveyor import Client

    async with Client(url, key) as client:
        await until("the server", lambda: _healthy(client))
        # 2. Submit the documents: each first job's id is its workflow's id.
        ids = {doc: (await client.enqueue("translate", {"doc": doc, "text": text})).id
               for doc, text in DOCS.items()}  # fmt: skip
        print(f"submitted {len(ids)} documents through {url}/v1/jobs")

        # 3. Every workflow ends, or waits at its review.
        async def settled() -> dict[str, Any] | None:
            flows = {doc: await client.workflow(wf) for doc, wf in ids.items()}
            pending = [f for f in flows.values() if f.status.value not in ("done", "awaiting")]
            return None if pending else flows

        flows = await until("the workflows to settle", settled)
        waiting = {doc: f for doc, f in flows.items() if f.status.value == "awaiting"}
        for doc, f in waiting.items():
            prompt = (await client.get(f.steps[-1].job_id)).prompt
            print(
                f"  {doc}: waits for review: {prompt['translation']!r} ({', '.join(prompt['issues'])})"
            )

        # 4. Three reviewers, three ways.
        review = {doc: f.steps[-1].job_id for doc, f in waiting.items()}
        conveyor("--url", url, "--api-key", key, "resume", review["shipping"],
                 "--data", json.dumps({"approve": True, "by": "ana"}), env=env)  # fmt: skip
        await client.resume(review["welcome"], {"approve": True, "by": "li",
                            "translation": "bienvenido al equipo, novato"})  # fmt: skip
        conveyor("--app", APP, "resume", review["morning"],
                 "--data", json.dumps({"approve": False, "by": "sam"}), env=env)  # fmt: skip

        async def all_done() -> dict[str, Any] | None:
            flows = {doc: await client.workflow(wf) for doc, wf in ids.items()}
            return flows if all(f.status.value == "done" for f in flows.values()) else None

        flows = await until("every workflow to end", all_done)

    # 5. What happened.
    ok = True
    for doc, f in flows.items():
        last = f.steps[-1]
        result = (await _result(url, key, last.job_id)) or {}
        flagged = doc in review
        expected_published = doc != "morning"
        ok &= bool(result.get("published")) == expected_published
        ok &= ("reviewing" in f.labels) == flagged
        line = " → ".join(f.labels)
        if result.get("published"):
            outcome = f"published {result.get('translation')!r}"
        else:
            outcome = f"rejected by {result.get('rejected_by')}"
        print(f"  {doc:9} {line} → {f.status.value}: {outcome}")
    print(conveyor("--url", url, "--api-key", key, "workflow", ids["welcome"], env=env))
    return ok


async def _healthy(client: Any) -> bool:
    try:
        await client.stats()
    except Exception:
        return False
    return True


async def _result(url: str, key: str, job_id: str) -> Any:
    from conveyor import Client

    async with Client(url, key) as client:
        return (await client.get(job_id)).result


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-translation-"))
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "CONVEYOR_URL": os.environ.get("CONVEYOR_URL", f"sqlite:///{tmp / 'translation.db'}"),
    }
    # 1. A key and the server (HTTP API + worker in one process).
    key = json.loads(conveyor("--app", APP, "keys", "create", "--admin", "--name", "example",
                              "--json", env=env))["key"]  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "serve", APP, "--with-worker", "--port", str(port),
         "--concurrency", "4", "--shutdown-grace", "5"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        ok = asyncio.run(scenario(f"http://127.0.0.1:{port}", key, env))
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    print("every document ended as expected" if ok else "UNEXPECTED OUTCOME")
    return 0 if ok and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
