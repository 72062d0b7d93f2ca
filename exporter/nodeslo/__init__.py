"""nodeslo: a Prometheus exporter and SLO alerting pack for deterministic servers."""

__version__ = "0.1.0"
