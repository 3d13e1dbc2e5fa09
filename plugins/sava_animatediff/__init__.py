"""SAVA plug-in: animatediff."""
