"""Simulated devices speaking the fleetwave protocol, with failure injection."""
