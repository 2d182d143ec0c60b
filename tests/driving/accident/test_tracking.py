"""The IoU tracker that gives real clips object slots."""

from __future__ import annotations

import numpy as np
import pytest

from domains.driving.accident.tracking import link_detections, tracks_to_slots


def test_two_objects_keep_their_ids_through_a_missed_frame_and_order():
    car = [[10 + t, 10, 30 + t, 20] for t in range(5)]
    person = [[50, 5, 54, 15 + t] for t in range(5)]
    frames = [
        np.array([car[0], person[0]]),
        np.array([person[1], car[1]]),
        np.array([car[2]]),
        np.array([car[3], person[3]]),
        np.array([person[4], car[4]]),
    ]
    tracks = link_detections(frames, min_iou=0.3, max_missed=2)
    ids = [sorted(f) for f in tracks]
    assert ids == [[0, 1], [0, 1], [0], [0, 1], [0, 1]]  # the person skips frame 2 and keeps id 1
    assert np.allclose(tracks[4][0], car[4]) and np.allclose(tracks[4][1], person[4])


def test_a_track_missing_too_long_ends_and_a_new_id_starts():
    box = np.array([[0, 0, 10, 10]])
    tracks = link_detections([box, np.zeros((0, 4)), np.zeros((0, 4)), box], max_missed=1)
    assert [list(f) for f in tracks] == [[0], [], [], [1]]


def test_boxes_overlapping_less_than_min_iou_start_a_new_track():
    # [0,0,10,10] then [8,0,18,10]: intersection 2 x 10 = 20, union 100 + 100 - 20 = 180, IoU = 1/9 = 0.111
    frames = [np.array([[0, 0, 10, 10]]), np.array([[8, 0, 18, 10]])]
    assert [sorted(f) for f in link_detections(frames, min_iou=0.3)] == [[0], [1]]
    assert [sorted(f) for f in link_detections(frames, min_iou=0.1)] == [[0], [0]]  # 0.111 >= 0.1: linked


def test_slots_take_the_longest_tracks_first():
    tracks = [
        {0: np.array([0, 0, 2, 2]), 1: np.array([0, 0, 9, 9])},
        {1: np.array([0, 0, 9, 9]), 2: np.array([0, 0, 4, 4])},
    ]
    boxes, valid, ids = tracks_to_slots(tracks, max_objects=2)
    # track 1 is seen twice; tracks 0 and 2 once each with areas 4 and 16: track 2 wins the tie
    assert ids.tolist() == [1, 2]
    assert valid.tolist() == [[True, False], [True, True]]
    assert boxes.shape == (2, 2, 4) and np.allclose(boxes[1, 1], [0, 0, 4, 4])


def test_bad_min_iou_is_named():
    with pytest.raises(ValueError, match="min_iou"):
        link_detections([], min_iou=0)


def test_empty_boxes_are_ignored_not_fatal():
    box, flat = [0, 0, 10, 10], [5, 5, 5, 9]  # zero width: IoU 0/0
    tracks = link_detections([np.array([box, flat]), np.array([flat, box])])
    assert [list(f) for f in tracks] == [[0], [0]]
