"""The entry gate: face, card QR and barcode decisions that open the turnstile."""
