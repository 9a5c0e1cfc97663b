"""``pipeline serve-api``: the HTTP ingress (POST /orders, GET /orders/{id}, /docs,
/asyncapi) under uvicorn; ``pipeline api-token``: a development key and a token for it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import ConfigurationError
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
    try:
        app = create_ingress(settings, api)
    except ConfigurationError as exc:
        typer.echo(f"order API not started: {exc}", err=True)
        raise typer.Exit(2) from exc
    uvicorn.run(app, host=host or api.host, port=port or api.port, log_level="info")


LOCAL_ISSUER = "urn:order-pipeline:local"


def api_token(
    customer: Annotated[str, typer.Option(help="The customer id the token acts for.")] = "cus-1",
    operator: Annotated[
        bool, typer.Option(help="Add the operator scope: the token reads every order.")
    ] = False,
    key_dir: Annotated[
        Path, typer.Option(help="Where the signing key and its jwks.json are kept.")
    ] = Path(".cache/api-auth"),
    ttl_s: Annotated[int, typer.Option(help="How long the token is valid, in seconds.")] = 86_400,
) -> None:
    """Print a token for the order API, signed with a development key kept in KEY_DIR
    (created on first use). Local development and docker compose only: a deployment
    trusts its OIDC issuer instead."""
    from pipeline.ingress.local_issuer import JWKS_FILE, LocalIssuer

    api = load_settings().api
    issuer = LocalIssuer.in_directory(key_dir, api.auth_issuer or LOCAL_ISSUER, api.auth_audience)
    scopes = [api.auth_operator_scope] if operator else []
    typer.echo(
        f"order API token for {customer} (valid {ttl_s}s); the API trusts it with "
        f"PIPELINE_API_AUTH_ISSUER={issuer.issuer} "
        f"PIPELINE_API_AUTH_JWKS_FILE={key_dir / JWKS_FILE}",
        err=True,
    )
    # Alone on stdout, so that TOKEN=$(pipeline api-token) works.
    typer.echo(issuer.token(customer, scopes=scopes, ttl_s=ttl_s))
