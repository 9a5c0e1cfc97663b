"""A labelled Prometheus histogram that costs a list increment per observation, and a
counter of its observations that costs nothing more.

``prometheus_client``'s ``Histogram.observe`` takes a lock and walks the bucket bounds
for every value: about a twentieth of a checkout stage's CPU when it observes every
record twice (handler time and end-to-end latency). A stage engine observes from one
event-loop thread, so :class:`LoopHistogram` keeps each stage's bucket counts in a
plain list (a binary search finds the bucket) and exports them through a custom
collector, with the same name, labels and buckets a ``Histogram`` would have: the
dashboards and alerts read it unchanged. A scrape from another thread reads counts a
record apart at worst.

A counter that counts exactly what a histogram observes (records handled, handler
durations observed) need not be counted twice: :class:`ObservationCount` exports the
histogram's per-label count as a counter of its own.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString


class HistogramChild:
    """One label value's buckets."""

    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in its bucket (``le`` is inclusive, as Prometheus has it)."""
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value


class LoopHistogram:
    """A histogram with one label (the stage), observed from one event loop."""

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
        label: str = "stage",
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(sorted(buckets))
        self._label = label
        self._children: dict[str, HistogramChild] = {}
        registry.register(self)

    def labels(self, value: str) -> HistogramChild:
        """The buckets of one label value (created on first use)."""
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = HistogramChild(self._bounds)
        return child

    @property
    def label(self) -> str:
        """The label's name."""
        return self._label

    def children(self) -> list[tuple[str, HistogramChild]]:
        """Every label value's buckets so far."""
        return list(self._children.items())

    def describe(self) -> list[Metric]:
        """The metric this collector exports (for the registry's duplicate check)."""
        return [HistogramMetricFamily(self._name, self._documentation, labels=[self._label])]

    def collect(self) -> Iterator[Metric]:
        """The cumulative buckets, count and sum of every label value."""
        family = HistogramMetricFamily(self._name, self._documentation, labels=[self._label])
        bounds = [*map(floatToGoString, self._bounds), "+Inf"]
        for value, child in self.children():
            running, cumulative = 0, []
            for bound, count in zip(bounds, list(child.counts), strict=True):
                running += count
                cumulative.append((bound, float(running)))
            family.add_metric([value], cumulative, child.sum)
        yield family


class ObservationCount:
    """A counter (one label, the histogram's) whose value is how many observations a
    :class:`LoopHistogram` has had for that label."""

    def __init__(
        self, name: str, documentation: str, of: LoopHistogram, registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._of = of
        registry.register(self)

    def describe(self) -> list[Metric]:
        """The metric this collector exports (for the registry's duplicate check)."""
        return [CounterMetricFamily(self._name, self._documentation, labels=[self._of.label])]

    def collect(self) -> Iterator[Metric]:
        """Each label value's observation count."""
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._of.label])
        for value, child in self._of.children():
            family.add_metric([value], float(sum(child.counts)))
        yield family
