"""Mosquitto fixtures (filled by the MQTT work)."""
