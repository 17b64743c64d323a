"""The reference device agent (`fleetwave agent --config FILE`, DESIGN.md 9.2).

It runs on small Linux devices, so at run time it imports only the standard library,
paho-mqtt, pyyaml, cryptography (with rfc8785) and `fleetwave.protocol` — the one device
protocol the simulator speaks too. Nothing here may import click, aiohttp, SQLAlchemy or
kopf; `tests/agent/test_imports.py` runs the agent and checks.
"""
