"""Kiosk touch UI (Kivy): one screen set per role; talks to the agent, never to drivers."""
