"""Dependency aliases the routers share (async: a sync dependency costs a thread hop per request)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serving.metrics import Metrics
from serving.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    """The loaded runtime of this app."""
    return request.app.state.runtime


async def get_request_id(request: Request) -> str:
    """The id of the request being answered."""
    return request.state.request_id


async def get_metrics(request: Request) -> Metrics:
    """The app's metrics."""
    return request.app.state.metrics


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
