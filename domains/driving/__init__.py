"""Driving: road-scene detection and road-anomaly finding (KITTI / SegmentMeIfYouCan layouts)."""
