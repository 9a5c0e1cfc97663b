"""``pipeline serve-api``: the HTTP ingress (POST /orders, GET /orders/{id}, /docs,
/asyncapi) under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.settings import load_settings


def serve_api(
    host: Annotated[str | None, typer.Option(help="Default: PIPELINE_API_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: PIPELINE_API_PORT.")] = None,
) -> None:
    """Serve the order API until SIGTERM (the broker is stopped with the app)."""
    import uvicorn

    from pipeline.ingress import create_ingress

    settings = load_settings()
    api = settings.api
    app = create_ingress(settings, api)
    uvicorn.run(app, host=host or api.host, port=port or api.port, log_level="info")
