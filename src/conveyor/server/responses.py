"""`Json`: responses serialised with orjson (job payloads and results are arbitrary JSON; orjson
is several times faster than the standard library on them and already a conveyor dependency)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class Json(JSONResponse):
    """A JSONResponse (so the OpenAPI document shows each route's model) rendered by orjson."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
