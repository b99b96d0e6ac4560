"""GET /metrics in Prometheus text format.

Open like the health routes, on purpose: scrapers rarely carry API keys, and the metrics hold
counts, latencies and the model version, never a lead's data. Keep the port off the internet
(or block /metrics at the proxy) if request volumes are themselves confidential.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Requests and latency by route and status, scored leads by tier, the served model."""
    registry = request.app.state.metrics
    return Response(registry.render(), media_type=registry.content_type)
