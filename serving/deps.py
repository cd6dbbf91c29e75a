"""Dependency aliases the routers share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serving.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    """The loaded runtime of this app."""
    return request.app.state.runtime


def get_request_id(request: Request) -> str:
    """The id of the request being answered."""
    return request.state.request_id


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
