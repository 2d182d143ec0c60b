"""Accident anticipation: per-frame risk of a collision within a few seconds, from dashcam clips (issue #18)."""
