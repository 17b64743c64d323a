"""The controller's MQTT connection: ingest of device messages, publishing of commands."""
