"""The `fleetwave` command line: one module per command, loaded on use."""
