"""`/health`, `/ready` and `/metrics` (SPEC §4, §7): what an orchestrator and Prometheus ask a
titan service.

- `/health`: 200 while the process answers (a liveness probe: restart me if this fails).
- `/ready`: 200 when every readiness check passes, else 503; both with a JSON body listing each
  check (`ledger`, `nats`, `stream_spec`, `lease`…) as `{"ok": bool, "detail": str}` and the
  service's `role` (`leader`, `standby`, `starting`, `draining`). A hot standby is alive and not
  ready: traffic and alerts treat it so.
- `/metrics`: the Prometheus text format of the service's registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

READY_ROLES = ("leader", "console")
"""The roles that take traffic: a serve leading its ledger, a console alone."""


@dataclass(frozen=True, slots=True)
class Check:
    """One readiness check's result."""

    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Readiness:
    """What `/ready` reports."""

    role: str
    checks: Mapping[str, Check]

    @property
    def ready(self) -> bool:
        return self.role in READY_ROLES and all(check.ok for check in self.checks.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "role": self.role,
            "checks": {name: {"ok": c.ok, "detail": c.detail} for name, c in self.checks.items()},
        }


def probes_router(readiness: Callable[[], Readiness], registry: CollectorRegistry) -> APIRouter:
    """The three probe routes over a readiness function and a metrics registry."""
    router = APIRouter()

    @router.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready")
    def ready() -> JSONResponse:
        state = readiness()
        return JSONResponse(state.to_json(), status_code=200 if state.ready else 503)

    @router.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def probes_app(readiness: Callable[[], Readiness], registry: CollectorRegistry) -> FastAPI:
    """An app serving the probes alone (no docs pages, no OpenAPI: nothing else is exposed)."""
    app = FastAPI(title="titan", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(probes_router(readiness, registry))
    return app
