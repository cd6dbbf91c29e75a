"""Request bodies the hot-path routes parse straight from bytes (`serving.hot` writes their answers).

FastAPI's own path decodes JSON to Python objects, validates them, and validates the answer
again before encoding it; for a 50-candidate risk request that doubles the time the service
spends outside the model. These routes declare their bodies here so the OpenAPI schema, the
422 errors and the request contract stay exactly those of a normal route.
"""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from serving.schemas import DecisionCreate, RerouteCreate, RiskScoresCreate

Body = TypeVar("Body", bound=BaseModel)
PARSED_BODIES: tuple[type[BaseModel], ...] = (RiskScoresCreate, DecisionCreate, RerouteCreate)
REF = "#/components/schemas/{model}"


async def parse(request: Request, model: type[Body]) -> Body:
    """The request body validated as `model`; a 422 naming the field (as FastAPI words it) otherwise."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        problems = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False, include_context=False)]
        raise RequestValidationError(problems, body=raw.decode(errors="replace")) from None


def request_body(model: type[BaseModel]) -> dict:
    """The `openapi_extra` that documents a body parsed by `parse`."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
        }
    }


def component_schemas() -> dict[str, dict]:
    """OpenAPI components of the bodies routes parse themselves (and of the models inside them)."""
    components: dict[str, dict] = {}
    for model in PARSED_BODIES:
        schema = model.model_json_schema(ref_template=REF)
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    return components
