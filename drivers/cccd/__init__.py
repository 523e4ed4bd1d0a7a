"""The Vietnamese citizen ID card (CCCD): its QR code, its MRZ and its ICAO 9303 chip."""
