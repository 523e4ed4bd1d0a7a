"""Device I/O only: each device a Protocol, a real implementation and a simulator."""
