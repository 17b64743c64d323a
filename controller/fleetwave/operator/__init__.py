"""The Kubernetes operator: kopf handlers that feed the same engine as `fleetwave run`."""
