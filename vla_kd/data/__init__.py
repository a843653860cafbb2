"""Demonstrations and datasets (LeRobot v3.0 layout)."""
