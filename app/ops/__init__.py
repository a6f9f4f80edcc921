"""Operating the service: Prometheus metrics and the start-up preflight check."""
