"""Alembic migrations of the ingress's database (run by
:func:`pipeline.ingress.database.migrate.upgrade`)."""
