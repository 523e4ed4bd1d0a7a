"""The device runtime: config, supervisor, local store, MQTT sync, role flows."""
