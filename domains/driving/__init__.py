"""Driving: road-scene detection, road-anomaly finding, road-user instances, object classification and accident
anticipation (KITTI / SegmentMeIfYouCan / CCD layouts)."""
