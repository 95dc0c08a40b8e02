"""The translation pipeline: translate → verify → (only when flagged) human review → publish.

Each document is one workflow (its id is the first job's id). A fake translator (a word list)
stands in for the model; the verifier flags translations with words it could not translate; a
person reviews flagged ones (`AwaitInput`: the job waits holding no worker slot) and approves,
corrects or rejects them with ``conveyor resume``, ``POST /v1/jobs/{id}/resume`` or
``app.resume``; approved translations are published.

Run a worker (or ``conveyor serve --with-worker``) for it from the repository root::

    python -m conveyor worker examples.translation.pipeline:app

The store is ``$CONVEYOR_URL`` (default ``sqlite:///translation.db``).
"""

from __future__ import annotations

import os
import re
from typing import Any

from conveyor import AwaitInput, Context, Conveyor, Next

#: The fake translator's vocabulary (English → Spanish).
WORDS = {
    "hello": "hola", "world": "mundo", "the": "el", "report": "informe", "is": "está",
    "ready": "listo", "invoice": "factura", "was": "fue", "paid": "pagada", "thanks": "gracias",
    "your": "tu", "order": "pedido", "has": "ha", "shipped": "enviado", "welcome": "bienvenido",
    "to": "a", "team": "equipo", "good": "buen", "morning": "día",
}  # fmt: skip
#: How long a flagged translation waits for its reviewer before the review fails.
REVIEW_TIMEOUT = 24 * 3600.0


def translate_text(text: str) -> str:
    """Word by word; a word the vocabulary lacks is kept as ``[word]``."""
    words = re.findall(r"[\w']+|[^\w\s]", text.lower())
    out = " ".join(WORDS.get(w, w if not w[0].isalpha() else f"[{w}]") for w in words)
    return re.sub(r" ([^\w\s\[])", r"\1", out)  # no space before punctuation


def find_issues(translation: str) -> list[str]:
    """What a reviewer must look at: the words left untranslated."""
    return [f"untranslated: {w}" for w in re.findall(r"\[([\w']+)\]", translation)]


def register(app: Conveyor) -> None:
    """The pipeline's four tasks on ``app``."""

    # steps=3: translate, verify, publish (a flagged document declares a fourth, its review).
    @app.task(queue="translation", step="translating", steps=3, retries=3)
    async def translate(ctx: Context, doc: str, text: str) -> Next:
        await ctx.progress(50, "translating")
        translation = translate_text(text)
        return Next("verify", {"doc": doc, "source": text, "translation": translation},
                    result={"words": len(text.split())})  # fmt: skip

    @app.task(queue="translation", step="verifying")
    async def verify(doc: str, source: str, translation: str) -> Next:
        issues = find_issues(translation)
        if issues:
            return Next("review", {"doc": doc, "source": source, "translation": translation,
                                   "issues": issues}, steps=4)  # fmt: skip
        return Next("publish", {"doc": doc, "translation": translation})

    @app.task(queue="review", step="reviewing")
    async def review(
        ctx: Context, doc: str, source: str, translation: str, issues: list[str]
    ) -> AwaitInput | Next | dict[str, Any]:
        if not ctx.resumed:  # ask, and free the worker until someone answers
            prompt = {"doc": doc, "source": source, "translation": translation, "issues": issues}
            return AwaitInput(prompt, timeout=REVIEW_TIMEOUT, on_timeout="fail")
        decision = ctx.input if isinstance(ctx.input, dict) else {}
        if not decision.get("approve"):
            return {"doc": doc, "published": False, "rejected_by": decision.get("by")}
        final = decision.get("translation") or translation
        return Next(
            "publish", {"doc": doc, "translation": final, "reviewed_by": decision.get("by")}
        )

    @app.task(queue="translation", step="publishing")
    async def publish(doc: str, translation: str, reviewed_by: str | None = None) -> dict[str, Any]:
        return {"doc": doc, "published": True, "translation": translation,
                "reviewed_by": reviewed_by}  # fmt: skip


def build_app(url: str) -> Conveyor:
    app = Conveyor(url)
    register(app)
    return app


app = build_app(os.environ.get("CONVEYOR_URL", "sqlite:///translation.db"))
