"""Reading a Prometheus scrape in tests, with prometheus-client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(scrape: str, name: str, **labels: str) -> float | None:
    """One sample's value, None when the scrape has no such sample."""
    return samples(scrape).get((name, tuple(sorted(labels.items()))))
