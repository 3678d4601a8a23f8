"""One JSON error shape for every failure the gateway answers.

Body: ``{"error": "<human-readable message>"}``, plus ``"details": [{"field", "message"}, ...]``
for validation failures that concern a field. A body that is not JSON at all answers 400 saying
where it breaks (line and column), without ``details``: there is no field to name. Status codes
follow the reference's table (400, 401, 403, 404, 500) plus 409 (conflict), 413 (body too large),
429 (rate or usage limit, with ``Retry-After`` except for ``maxInstances``, which no waiting
lifts) and 503 (no worker/service answered in time, or none is running). A 500 never carries a
stack trace or exception text: the message names the correlation id to look up in the logs.

A body that does not fit its route's response model (a field the model does not declare, a
missing or mistyped one: a service and the gateway disagree on the contract) is a 500 too, logged
with the offending fields (their places and error types, never their values).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from wa_common.bus import PublishError, RequestTimeout
from wa_common.logs import get_correlation_id, get_logger
from wa_common.schemas.wire import ErrorBody, field_errors, field_path

log = get_logger(__name__)


class ApiError(Exception):
    """A failure to answer with ``status`` and the JSON error body."""

    def __init__(
        self,
        status: int,
        error: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.details = details
        self.headers = headers


def error_response(
    status: int,
    error: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON error response ``{"error": ..., "details"?: [...]}``."""
    body: dict[str, Any] = {"error": error}
    if details:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error, exc.details, exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 400 and message == "There was an error parsing the body":
        # FastAPI's answer when a body cannot even be decoded (e.g. JSON that is not UTF-8).
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        message = (
            "Invalid request: the body is not valid JSON (it is not UTF-8 text)"
            if media == "application/json" or media.endswith("+json")
            else "Invalid request: the body could not be parsed"
        )
    if exc.status_code == 404 and message == "Not Found":
        message = "Not found: no such route"
    if exc.status_code == 405:
        message = "Method not allowed on this route"
    return error_response(exc.status_code, message, headers=dict(exc.headers or {}) or None)


def _position(doc: str | bytes, pos: int) -> tuple[int, int]:
    """1-based (line, column) of character offset ``pos`` in ``doc``."""
    text = doc.decode("utf-8", "replace") if isinstance(doc, bytes) else doc
    pos = max(0, min(pos, len(text)))
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def invalid_json_message(error: dict[str, Any], doc: Any) -> str:
    """``Invalid request: the body is not valid JSON (line 1, column 2: Expecting ...)`` for
    FastAPI's ``json_invalid`` error, whose ``loc`` is ``("body", <character offset>)``."""
    loc = error.get("loc") or ()
    offset = loc[-1] if loc and isinstance(loc[-1], int) else None
    reason = (error.get("ctx") or {}).get("error")
    where: list[str] = []
    if offset is not None and isinstance(doc, str | bytes):
        line, column = _position(doc, offset)
        where.append(f"line {line}, column {column}")
    if isinstance(reason, str) and reason:
        where.append(reason)
    suffix = f" ({': '.join(where)})" if where else ""
    return f"Invalid request: the body is not valid JSON{suffix}"


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    """400 with details, for a request FastAPI refused and for a payload model built inside a
    route that refused a value (still the caller's input: never a 500). A body that is not
    JSON says where it breaks and has no ``details`` (FastAPI's ``loc`` is an offset there)."""
    assert isinstance(exc, RequestValidationError | ValidationError)
    errors = list(exc.errors())
    broken = next((e for e in errors if isinstance(e, dict) and e.get("type") == "json_invalid"), None)
    if broken is not None:
        return error_response(400, invalid_json_message(broken, getattr(exc, "body", None)))
    details = field_errors(errors, root="request")
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
    return error_response(400, f"Invalid request: {summary}" if summary else "Invalid request", details)


async def _response_invalid(request: Request, exc: Exception) -> JSONResponse:
    """500 for an answer that does not fit the route's response model; the log names the route
    and each offending field (place and error type: values may be personal data or secrets)."""
    assert isinstance(exc, ResponseValidationError)
    problems = [
        {"field": field_path(e.get("loc", ()), root="request"), "type": e.get("type")}
        for e in exc.errors()
        if isinstance(e, dict)
    ]
    route = getattr(request.scope.get("route"), "path", None)
    log.error("response does not fit its model", method=request.method, route=route, problems=problems[:20])
    return error_response(500, f"Internal server error (correlation id {get_correlation_id()})")


async def _timeout(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestTimeout)
    log.warning("backend did not answer in time", target=exc.target, operation=exc.name)
    unknown = ""
    if exc.target.startswith("wa.shard."):
        # A command (a send) may have been taken up just before the deadline: a worker does not
        # start sending with less than WORKER_SEND_MIN_REMAINING_S left, but an answer can still
        # be late under overload. A retry with the same Idempotency-Key never sends twice.
        unknown = " (the command may still complete: retry with the same Idempotency-Key)"
    return error_response(
        503,
        f"Service unavailable: no answer from the {_target_name(exc.target)} within "
        f"{exc.timeout_s:.0f}s{unknown}; try again later",
        headers={"Retry-After": "5"},
    )


async def _publish_error(_: Request, exc: Exception) -> JSONResponse:
    log.warning("backend unreachable", error=str(exc))
    return error_response(
        503,
        "Service unavailable: the request could not be handed to a worker; try again later",
        headers={"Retry-After": "5"},
    )


def _target_name(routing_key: str) -> str:
    if routing_key.startswith("wa.shard.") or routing_key == "query":
        return "session workers"
    if routing_key.endswith(".stats"):
        return "stats service"
    if routing_key.endswith(".webhooks"):
        return "webhook dispatcher"
    return "backend"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the JSON error shape."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ValidationError, _validation_error)
    app.add_exception_handler(ResponseValidationError, _response_invalid)
    app.add_exception_handler(RequestTimeout, _timeout)
    app.add_exception_handler(PublishError, _publish_error)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error codes a route can answer."""
    text = {
        400: "Invalid request (missing or malformed fields, bad phone number, limit above 1000)",
        401: "Missing, invalid or expired token / API key",
        403: "Administrator rights required",
        404: "Instance (or resource) not found, or not the caller's",
        409: "Conflict with the current state",
        413: "Request body or file too large",
        429: "Rate limit or usage limit exceeded (see Retry-After; none for maxInstances)",
        503: "No worker or service answered in time; retry later",
    }
    return {c: {"model": ErrorBody, "description": text[c]} for c in codes}
