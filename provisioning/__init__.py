"""Device identity, broker configuration and credentials, install files."""
