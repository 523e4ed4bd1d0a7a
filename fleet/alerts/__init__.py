"""Alerts: what IT must know without watching the dashboard, sent by e-mail and webhooks.

The rules read what central already knows (the dashboard's attention list, the kiosks'
last contact, the last backup): an alert fires when a condition starts and, for a
condition that can end (a kiosk back online), once more when it ends. Messages wait in a
table until their target takes them, so a target that is down or slow costs retries, never
central's work, and a restart neither loses nor repeats them (``store.py``).
"""
