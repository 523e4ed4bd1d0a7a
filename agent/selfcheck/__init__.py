"""The self-check: loans and returns on the RFID pad, online through SIP2 or offline."""
