"""The API's routers, one module per resource; `create_app` includes every router listed here."""

from __future__ import annotations

from fastapi import APIRouter

from . import jobs, uploads

ROUTERS: list[APIRouter] = [jobs.router, uploads.router]
