"""Medical imaging domain: multi-reader lesion segmentation with calibrated uncertainty."""
