"""The OpenAPI document, corrected to say what the service really sends and accepts."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.errors import PROBLEM_JSON

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """Query strings and form fields cannot carry a JSON null: an optional one is simply left out."""
    options = schema.get("anyOf")
    if not options:
        return schema
    rest = [option for option in options if option.get("type") != "null"]
    if len(rest) != 1:
        return schema
    extra = {key: value for key, value in schema.items() if key != "anyOf"}
    return {**rest[0], **extra}


def _form_schemas(document: dict[str, Any]) -> set[str]:
    """The schemas of form bodies: FastAPI's own `Body_*`, and form models such as UploadForm."""
    names = {name for name in document["components"]["schemas"] if name.startswith("Body_")}
    for path in document["paths"].values():
        for operation in path.values():
            for media, body in operation.get("requestBody", {}).get("content", {}).items():
                if media in ("multipart/form-data", "application/x-www-form-urlencoded"):
                    names.add(body["schema"]["$ref"].rsplit("/", 1)[-1])
    return names


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for path in document["paths"].values():
                for operation in path.values():
                    # Every error is a problem document (app/api/errors.py), 422 included.
                    for code, response in operation.get("responses", {}).items():
                        media: list[dict[str, Any]] = list(response.get("content", {}).values())
                        declared: dict[str, Any] = media[0].get("schema", {}) if media else {}
                        # A body of its own (such as /ready's 503 ReadyResponse) stays as declared.
                        own = declared.get("$ref", "").rsplit("/", 1)[-1] not in ("", "HTTPValidationError", "Problem")
                        if int(code) >= 400 and not own:
                            response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
                    for parameter in operation.get("parameters", []):
                        parameter["schema"] = _without_null(parameter["schema"])
            for name in _form_schemas(document):
                schema = document["components"]["schemas"][name]
                schema["properties"] = {key: _without_null(value) for key, value in schema["properties"].items()}
            document["components"]["schemas"].pop("HTTPValidationError", None)
            document["components"]["schemas"].pop("ValidationError", None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
