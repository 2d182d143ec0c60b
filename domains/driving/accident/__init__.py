"""Accident anticipation from dashcam clips (issue #18)."""
