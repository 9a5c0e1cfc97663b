"""A sensor feed on the public API: screen readings, alert on hot ones by site, store the
rest in bulk writes. Run it with ``pipeline run examples.sensors.flow:pipeline --all``."""
