"""How the ``pipeline`` commands log: one line per record, with its trace context."""

from __future__ import annotations

import logging

from pipeline.telemetry.tracing import TraceContextFilter


def configure_logging(verbose: bool) -> None:
    """Log to stderr with trace and span ids; aiokafka at WARNING unless asked."""
    handler = logging.StreamHandler()
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s trace_id=%(trace_id)s span_id=%(span_id)s "
            "%(message)s"
        )
    )
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
