"""Central: FastAPI API, MQTT bridge, fleet manager."""
