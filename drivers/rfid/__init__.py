"""RFID item tags: the ISO 28560 data models, item security by AFI, and reader protocols."""
