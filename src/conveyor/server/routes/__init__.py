"""The API's routers, one module per resource; `create_app` includes every router listed here."""

from __future__ import annotations

from fastapi import APIRouter

from . import health, jobs, queues, workers

ROUTERS: list[APIRouter] = [jobs.router, queues.router, workers.router, health.router]
