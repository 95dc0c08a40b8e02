"""``GET /v1/workflows/{id}``: a chain's state, current step, steps in order and progress.

**Tenancy.** A tenant key reads its own tenant's workflows only: another tenant's answers 404,
exactly like a missing one (a chain never changes tenant)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ..auth import Reader
from ..deadline import backend_deadline
from ..models_workflows import WorkflowOut
from .jobs import ERRORS, conveyor_of

router = APIRouter(prefix="/v1/workflows", tags=["workflows"], responses=ERRORS)


@router.get("/{workflow_id}", response_model=WorkflowOut)
async def get_workflow(workflow_id: str, request: Request, principal: Reader) -> dict[str, Any]:
    """The workflow whose first job has this id (404 for an unknown one or another tenant's)."""
    app = conveyor_of(request)
    async with backend_deadline(request.app.state.settings):
        info = await app.workflow(workflow_id, tenant=principal.tenant_scope())
    return info.to_dict()
