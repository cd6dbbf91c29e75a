"""The hot-path routes (risk scores, routing decisions, reroutes): declared once, served two ways.

Each is a `HotRoute`: its path, its body, and the business call that answers it. The FastAPI
route serves it under its OpenAPI contract. `FastLane`, a pure ASGI middleware, serves the same
route ahead of the framework's routing and request layers, which cost a live request as much as
parsing its body does. Whatever is not a clean answer (no token, an invalid body, a batch too
large, any domain error) goes to the FastAPI route with the body replayed, so every error is
worded in one place, by the app's exception handlers. The business calls have no side effects,
so answering one request twice that way is safe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from serving import bodies
from serving.deps import admit_router
from serving.metrics import Metrics
from serving.runtime import Runtime

AUTHORIZATION = b"authorization"
JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class HotRoute:
    """A route the routing engine calls for every order: its path, body, and answer."""

    path: str
    body: type[BaseModel]
    # answer(runtime=, body=, request_id=) -> the response model, with `degraded` and `degraded_reasons`
    answer: Callable[..., BaseModel]
    # The per-candidate parts of an answer, each with its `unknown` names (for the metrics).
    candidates: Callable[[BaseModel], list]

    def respond(self, *, runtime: Runtime, body: BaseModel, request_id: str, metrics: Metrics) -> bytes:
        """The answer to a valid body, as JSON, counted in the metrics."""
        answer = self.answer(runtime=runtime, body=body, request_id=request_id)
        payload = answer.model_dump_json().encode()
        priced = self.candidates(answer)
        metrics.answered(
            endpoint=self.path,
            degraded=answer.degraded,
            reasons=answer.degraded_reasons,
            candidates=len(priced),
            unknown=(candidate.unknown for candidate in priced),
        )
        return payload

    async def serve(self, request: Request) -> Response:
        """The FastAPI route: admitted, parsed (a 422 naming the field), answered."""
        state = request.app.state
        await admit_router(request)
        body = await bodies.parse(request, self.body)
        payload = self.respond(
            runtime=state.runtime, body=body, request_id=request.state.request_id, metrics=state.metrics
        )
        return Response(payload, media_type="application/json")

    def answer_raw(self, *, scope: dict, raw: bytes) -> bytes:
        """The answer to a request's raw body, or an exception for the FastAPI route to word."""
        state = scope["app"].state
        authorization = next((v for k, v in scope["headers"] if k == AUTHORIZATION), None)
        admit_router.admit(runtime=state.runtime, authorization=authorization and authorization.decode("latin-1"))
        body = self.body.model_validate_json(raw)
        return self.respond(
            runtime=state.runtime, body=body, request_id=scope["state"]["request_id"], metrics=state.metrics
        )


class FastLane:
    """Pure ASGI middleware: answers the hot routes' valid requests itself; everything else goes to the app.

    It sits inside `RequestContext`, which gives each request its id and times it.
    """

    def __init__(self, app, *, routes: Sequence[HotRoute]) -> None:
        self.app = app
        self.routes = {route.path: route for route in routes}

    async def __call__(self, scope, receive, send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        messages = await _read_request(receive)
        payload = None
        if messages[-1]["type"] == "http.request":  # otherwise the client left before its body arrived
            try:
                payload = route.answer_raw(scope=scope, raw=b"".join(m.get("body", b"") for m in messages))
            except Exception:  # noqa: BLE001 - the FastAPI route words every error, in one place
                payload = None
        if payload is None:
            await self.app(scope, _replay(messages=messages, receive=receive), send)
            return
        scope["route"] = route  # the latency metric's endpoint label
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


async def _read_request(receive) -> list[dict]:
    """The request's messages up to its last body chunk (or whatever else ends it)."""
    messages = [await receive()]
    while messages[-1]["type"] == "http.request" and messages[-1].get("more_body"):
        messages.append(await receive())
    return messages


def _replay(*, messages: list[dict], receive):
    """A receive channel that gives back the messages already read, then the live ones."""
    pending = list(messages)

    async def replayed() -> dict:
        return pending.pop(0) if pending else await receive()

    return replayed
