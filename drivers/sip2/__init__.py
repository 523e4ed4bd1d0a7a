"""SIP2 (3M Standard Interchange Protocol 2.00): the kiosk's link to the library system."""
