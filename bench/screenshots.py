"""Screenshots of every dashboard page, desktop (1280 px) and phone (390 px) width, into
``docs/screenshots/`` (linked from README.md): ``python bench/screenshots.py``.

Serves a small enrichment app on a fresh SQLite store (uvicorn on loopback with a worker in the
same process), fills it with a batch in progress, a failed job, a job awaiting a decision and
reported costs, and photographs each page in Debian's headless Chromium (Playwright with
``executable_path``; no browser download)."""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402
from tests.server.harness import ApiServer  # noqa: E402

from conveyor import AwaitInput, Context, Conveyor  # noqa: E402
from conveyor.server import ServerSettings  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
SIZES = {"desktop": (1280, 860), "phone": (390, 844)}


def build(url: str) -> Conveyor:
    app = Conveyor(url)

    @app.task(queue="enrichment", retries=0)
    async def enrich(ctx: Context, session_id: str, seconds: float = 6.0) -> dict[str, Any]:
        for i, message in enumerate(("fetched the recording", "transcribed the audio",
                                     "asked the model for a summary")):  # fmt: skip
            await ctx.progress(30 * (i + 1), message, stage=message.split()[0])
            ctx.cost(0.0021, "usd")
            ctx.cost(1200, "tokens")
            await asyncio.sleep(seconds / 3)
        return {"session_id": session_id, "summary": "a short summary"}

    @app.task(queue="enrichment", retries=0)
    async def transcribe(session_id: str, api_key: str = "") -> None:
        raise RuntimeError(f"speech API answered 503 for {session_id}")

    @app.task(queue="review", retries=0)
    async def review(ctx: Context, doc: str, translation: str) -> Any:
        if not ctx.resumed:
            return AwaitInput({"doc": doc, "translation": translation,
                               "issues": ["informal tone"]})  # fmt: skip
        return ctx.input

    return app


def run(url: str, fn: Any) -> Any:
    async def go() -> Any:
        app = build(url)
        await app.open()
        try:
            return await fn(app)
        finally:
            await app.close()

    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API keeps a loop in this thread
        return pool.submit(asyncio.run, go()).result()


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="conveyor-shots-"))
    url = f"sqlite:///{tmp / 'shots.db'}"
    OUT.mkdir(parents=True, exist_ok=True)

    async def setup(app: Conveyor) -> dict[str, Any]:
        _, key = await app.api_keys.create(tenant=None, admin=True, name="screenshots")
        for i in range(6):
            await app.enqueue("enrich", {"session_id": f"s-{i}", "seconds": 0.3}, tenant="acme")
        failed = await app.enqueue("transcribe", {"session_id": "s-77", "api_key": "sk-live-1"},
                                   tenant="acme")  # fmt: skip
        await app.enqueue("review", {"doc": "welcome", "translation": "Welcome, newcomer"})
        batch = await app.enqueue_many(
            [{"task": "enrich", "payload": {"session_id": f"b-{i}", "seconds": 9.0}}
             for i in range(24)], tenant="acme")  # fmt: skip
        return {"key": key, "failed": failed.id, "batch": batch.id}

    data = run(url, setup)
    settings = ServerSettings(secret="screenshots", upload_dir=tmp / "up")
    srv = ApiServer(lambda: build(url), settings, worker={"concurrency": 6}).start()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM,
                                         args=["--no-sandbox", "--disable-background-networking"])  # fmt: skip
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{srv.url}/login")
            page.get_by_label("API key").fill(data["key"])
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(re.compile(r".*/jobs$"))
            # The queues page samples throughput while it is open (its charts): let it draw
            # a few samples while the batch is under way.
            page.goto(f"{srv.url}/queues")
            time.sleep(14.0)
            pages = {
                "queues": "/queues",
                "batch": f"/batches/{data['batch']}?noun=session&verb=enriched",
                "jobs": "/jobs",
                "job": f"/jobs/{data['failed']}",
                "awaiting": "/awaiting",
                "workers": "/workers",
                "costs": "/costs",
                "bulk": "/jobs/bulk?action=cancel&queue=enrichment",
            }
            for name, path in pages.items():
                for size, (w, h) in SIZES.items():
                    page.set_viewport_size({"width": w, "height": h})
                    page.goto(f"{srv.url}{path}")
                    page.wait_for_load_state("networkidle")
                    page.screenshot(
                        path=str(OUT / f"{name}-{size}.png"), full_page=size == "desktop"
                    )
            page.goto(f"{srv.url}/login")
            context.clear_cookies()
            for size, (w, h) in SIZES.items():
                page.set_viewport_size({"width": w, "height": h})
                page.goto(f"{srv.url}/login")
                page.screenshot(path=str(OUT / f"login-{size}.png"))
            browser.close()
    finally:
        srv.stop()
    print(f"screenshots in {OUT}")


if __name__ == "__main__":
    main()
