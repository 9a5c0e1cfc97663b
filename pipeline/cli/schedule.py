"""``pipeline schedule``: the periodic jobs (dead-letter re-drive, reconciliation)."""

from __future__ import annotations

import typer

from pipeline import loop
from pipeline.settings import load_settings


def schedule() -> None:
    """Run the job scheduler and runner until SIGTERM; /metrics on the schedule port."""
    from pipeline.schedule import serve

    logging_setup()
    raise typer.Exit(loop.run(serve(settings := load_settings(), settings.schedule)))


def logging_setup() -> None:
    """INFO for the pipeline's own loggers; aiokafka only when something is wrong."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("taskiq").setLevel(logging.WARNING)  # FastStream logs each tick already
