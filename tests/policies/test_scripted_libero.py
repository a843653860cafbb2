"""The LIBERO pick-and-place expert's phase logic on synthetic privileged states (no simulator)."""
from __future__ import annotations

import itertools

import numpy as np

from vla_kd.policies.scripted_libero import LiberoPickPlaceExpert

LAYOUT = {"state": {"eef_pos": slice(0, 3)},
          "privileged": {"soup_1_pos": slice(0, 3), "basket_1_pos": slice(3, 6)}}
BASKET = np.array([0.0, 0.3, 0.0])


def observe(eef, obj) -> dict:
    return {"state": np.asarray(eef, float)[None], "privileged": np.concatenate([obj, BASKET])[None]}


def drive(expert, eef, obj, steps, carried=False):
    """Moves the end effector by the commanded deltas (5 cm per unit); the object follows it
    when ``carried`` (keeping its offset), else stays put."""
    eef, obj = np.array(eef, float), np.array(obj, float)
    for _ in range(steps):
        delta = expert.act(observe(eef, obj))[0][:3] * 0.05
        eef = eef + delta
        if carried and expert.phase >= 3:
            obj = obj + delta
    return eef, obj


def make_expert():
    return LiberoPickPlaceExpert(LAYOUT, [["in", "soup_1", "basket_1_contain_region"]])


def test_a_missed_grasp_is_retried_a_bounded_number_of_times():
    expert = make_expert()
    eef, obj = [0.0, 0.0, 0.3], [0.1, -0.1, 0.05]
    phases = []
    for _ in range(400):
        eef, obj = drive(expert, eef, obj, steps=1, carried=False)
        phases.append(expert.phase)
    retries = sum(1 for a, b in itertools.pairwise(phases) if (a, b) == (3, 0))
    assert retries == 2 and expert.attempts == 2


def test_the_object_not_the_hand_is_brought_over_the_target():
    expert = make_expert()
    # The hand closes 4 cm off the object's centre (the case that dropped objects beside the basket).
    eef, obj = drive(expert, [0.0, 0.0, 0.3], [0.1, -0.1, 0.05], steps=40)
    while expert.phase < 3:
        eef, obj = drive(expert, eef, obj, steps=1)
    obj = eef - np.array([0.04, 0.0, 0.0])
    eef, obj = drive(expert, eef, obj, steps=200, carried=True)
    assert expert.phase == 6
    assert np.linalg.norm((obj - BASKET)[:2]) < 0.03
    assert np.linalg.norm((eef - BASKET)[:2]) > 0.03


def test_bowls_are_grasped_by_the_rim_on_a_new_side_each_retry():
    expert = LiberoPickPlaceExpert(
        {"state": {"eef_pos": slice(0, 3)},
         "privileged": {"akita_black_bowl_1_pos": slice(0, 3), "plate_1_pos": slice(3, 6)}},
        [["on", "akita_black_bowl_1", "plate_1"]],
    )
    sides = []
    for attempt in range(3):
        expert.attempts = attempt
        offset = expert.grasp_offset()
        assert np.isclose(np.linalg.norm(offset[:2]), expert.rim_radius) and offset[2] > 0
        sides.append(tuple(offset[:2].round(3)))
    assert len(set(sides)) == 3
    assert not make_expert().grasp_offset().any()  # other objects: at their origin
