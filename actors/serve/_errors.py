"""The one error a handler raises to refuse a request."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


class BadRequest(Exception):
    """A request the server refuses, with its status code and the field at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.headers = headers

    def response(self) -> JSONResponse:
        """The refusal as a JSON response: ``{"error": ..., "field": ...}``."""
        body: dict[str, Any] = {"error": str(self)}
        if self.field is not None:
            body["field"] = self.field
        return JSONResponse(body, status_code=self.status, headers=self.headers)
