"""The exit security gate: alarms on secured items leaving, counts passages."""
