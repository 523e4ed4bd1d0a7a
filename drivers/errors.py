"""The drivers' own exceptions; callers translate them with ``raise … from``."""


class DriverError(RuntimeError):
    """Base of everything a driver raises on purpose."""


class DeviceUnavailable(DriverError):
    """The device cannot be opened or went away (unplugged, stream down)."""


class DeviceNotResponding(DriverError):
    """The device is connected but did not answer in time."""


class ProtocolViolation(DriverError, ValueError):
    """The device said something the protocol does not allow (serial noise, wrong firmware)."""
