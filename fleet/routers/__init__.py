"""Central's API, one router per resource, sharing the dependencies in ``fleet.auth``."""
