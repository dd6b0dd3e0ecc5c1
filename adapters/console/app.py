"""The console app: GraphQL at `/graphql` (queries, mutations, graphql-transport-ws
subscriptions), the operator page at `/`, and `/health`, `/ready`, `/metrics`.

Every GraphQL error carries `extensions.code`; the HTTP status follows the first error's code
(401 no or bad token, 403 a role is missing, 400 bad input, 404 unknown id, 409 a writer is busy,
503 a dependency is away). Production mode: no GraphQL IDE, no queries over GET.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI, Request, Response, WebSocket
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from strawberry.exceptions import ConnectionRejectionError
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET

from .auth import TokenBook
from .graphql.context import Services
from .graphql.errors import coded
from .graphql.schema import build_schema
from .ports import ConsoleError
from .probes import Readiness, probes_router

STATIC: Final = Path(__file__).parent / "static"
PAGE_FILES: Final = {"app.js": "text/javascript", "app.css": "text/css"}

class ConsoleRouter(GraphQLRouter[Any, Any]):
    """strawberry's router, with a code on every error and the status that code names, and a
    WebSocket refused at `connection_init` unless its payload carries a valid token."""

    tokens: TokenBook | None = None

    async def on_ws_connect(self, context: Any) -> Any:
        params = context.get("connection_params") if isinstance(context, dict) else None
        token = params.get("authorization") or params.get("token") if isinstance(params, dict) else None
        try:
            assert self.tokens is not None
            self.tokens.authenticate(token if isinstance(token, str) else None)
        except ConsoleError as error:
            raise ConnectionRejectionError({"code": error.code, "message": error.message}) from None
        return UNSET

    async def process_result(self, request: Any, result: ExecutionResult) -> GraphQLHTTPResponse:
        response: GraphQLHTTPResponse = {"data": result.data}
        if result.errors:
            response["errors"] = [coded(error).formatted for error in result.errors]
        return response

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        errors = response_data.get("errors") if isinstance(response_data, dict) else None
        if errors:
            sub_response.status_code = int(errors[0]["extensions"]["status"])
        return super().create_response(response_data, sub_response)


MAX_BODY_BYTES: Final = 2_000_000
"""The largest GraphQL request body (a policy document is at most 1 MB of JSON)."""


def _refusal(code: str, message: str, status: int) -> Response:
    body = {"data": None, "errors": [{"message": message, "extensions": {"code": code, "status": status}}]}
    return JSONResponse(body, status_code=status)


MEASURED_PATHS: Final = frozenset({"/graphql", "/", "/health", "/ready", "/metrics"})


class ConsoleMetrics:
    """The console's own metrics, in the service's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "titan_console_requests_total", "Console HTTP requests by path and status", ["path", "status"], registry=registry
        )
        self.seconds = Histogram(
            "titan_console_request_seconds",
            "Console HTTP request latency by path",
            ["path"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )


def console_app(
    services: Services,
    readiness: Callable[[], Readiness],
    registry: CollectorRegistry,
    *,
    production: bool = True,
) -> FastAPI:
    """The console over its services. `production=False` turns on the GraphiQL IDE."""

    async def context(request: Request = None, websocket: WebSocket = None) -> dict[str, Any]:  # type: ignore[assignment]
        return {"services": services, "request": request or websocket}

    router = ConsoleRouter(
        build_schema(production=production),
        context_getter=context,
        graphql_ide="graphiql" if not production else None,
        allow_queries_via_get=not production,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        multipart_uploads_enabled=False,
    )
    router.tokens = services.tokens
    app = FastAPI(title="titan console", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = ConsoleMetrics(registry)

    @app.middleware("http")
    async def gate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        """Before anything is read or parsed: a bounded body, and a known token."""
        if request.url.path.startswith("/graphql") and request.method == "POST":
            length = request.headers.get("content-length")
            if length is None or not length.isdigit() or int(length) > MAX_BODY_BYTES:
                return _refusal("PAYLOAD_TOO_LARGE", f"a request body of at most {MAX_BODY_BYTES} bytes, with its Content-Length", 413)
            try:
                services.tokens.authenticate(request.headers.get("authorization"))
            except ConsoleError as error:
                return _refusal(error.code, error.message, error.status)
        return await call_next(request)

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.url.path if request.url.path in MEASURED_PATHS else "other"
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.seconds.labels(route).observe(time.perf_counter() - started)
        return response

    app.include_router(router, prefix="/graphql")
    app.include_router(probes_router(readiness, registry))

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"), headers=_PAGE_HEADERS)

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        media = PAGE_FILES.get(name)
        if media is None:  # only the page's own files: no path from the request reaches the disk
            return Response(status_code=404)
        return FileResponse(STATIC / name, media_type=media, headers=_PAGE_HEADERS)

    return app


_PAGE_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
