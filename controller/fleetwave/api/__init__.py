"""The HTTP API: reads, control operations, webhooks, /metrics and probes."""
