"""Alembic's environment: migrates the connection :func:`upgrade` hands over.

Migrations run only through :func:`pipeline.ingress.database.migrate.upgrade` (at API
start-up or ``pipeline db upgrade``), which opens the connection, takes the lock and
passes it in ``config.attributes``; there is no ``alembic.ini`` to point elsewhere.
"""

from __future__ import annotations

from alembic import context

from pipeline.ingress.database.schema import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    # SQLite alters tables by copying them; later revisions need batch mode there.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
