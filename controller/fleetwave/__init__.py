"""fleetwave: a GitOps reconciler that keeps device fleets on their declared versions."""

__version__ = "0.1.0"

API_GROUP = "fleetwave.io"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"
