"""Maintenance s35: the shared seeded split order and the detection box settings, each written once."""

from __future__ import annotations

import hashlib

from shared.data import DETECTION_MIN_VISIBILITY, detection_augmentations, detection_bbox_params, stable_rank


def test_stable_rank_is_the_sha1_of_seed_and_group():
    # the shipped benchmark splits (group_split, the accident clips' split_clips) sort by exactly this key
    assert stable_rank("seq_07", 3) == hashlib.sha1(b"3:seq_07").hexdigest()
    assert stable_rank(12, 0) == hashlib.sha1(b"0:12").hexdigest()


def test_min_visibility_reaches_the_augmentation_pipeline():
    assert DETECTION_MIN_VISIBILITY == 0.3  # what production trained with
    for value in (DETECTION_MIN_VISIBILITY, 0.55):
        params = detection_bbox_params(value)
        assert (params.format, list(params.label_fields), params.min_visibility) == ("pascal_voc", ["labels"], value)
        pipeline = detection_augmentations(min_visibility=value, height=32, width=64, seed=0)
        assert pipeline.processors["bboxes"].params.min_visibility == value
    assert detection_augmentations().processors["bboxes"].params.min_visibility == 0.3
