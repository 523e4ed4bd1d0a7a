"""The card desk: a reader registers with the CCCD, consents and gets a library card."""
