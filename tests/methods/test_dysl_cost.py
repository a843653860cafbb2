"""DySL's cost check: the expected cost of a guided call against hand-computed values, the post
threshold raised only as far as the limit needs, full depth when the guidance cannot pay, and
the replayed statistics on a real student at the demos' chunk boundaries."""

from __future__ import annotations

import numpy as np
import pytest
from test_dysl import dataset, student_of, tiny_teacher  # noqa: F401  (the module's fixture)

from vla_kd.policies.skip_cost import (
    GuidanceStatistics,
    PathTimes,
    cost_ratio,
    fit_post_threshold,
    guidance_statistics,
    path_times,
    shares,
)

TIMES = PathTimes(full=0.100, skip=0.060, first=0.010)


def statistics() -> GuidanceStatistics:
    # 5 boundary calls: one critical, one gripper flip, three cheap with jumps 0.1, 0.2, 0.3
    return GuidanceStatistics(
        critical=np.array([True, False, False, False, False]),
        jumps=np.array([9.0, 0.05, 0.1, 0.2, 0.3]),
        flips=np.array([False, True, False, False, False]),
        start_share=0.2,
    )


def test_shares_and_cost_ratio_by_hand():
    # post 0.15: rejected = the flip + jumps 0.2 and 0.3 -> 3 of 5; accepted: jump 0.1 -> 1 of 5
    p_full, p_skip, p_rejected = shares(statistics(), 0.15)
    assert (p_skip, p_rejected) == pytest.approx((0.8 * 1 / 5, 0.8 * 3 / 5))
    assert p_full == pytest.approx(0.2 + 0.8 * 1 / 5)
    expected = p_full * 1.0 + p_skip * 0.6 + p_rejected * 1.1
    assert cost_ratio(TIMES, (p_full, p_skip, p_rejected)) == pytest.approx(expected)
    # no post threshold: only the flip is rejected
    assert shares(statistics(), None)[2] == pytest.approx(0.8 * 1 / 5)


def test_post_threshold_is_raised_only_as_far_as_the_limit_needs():
    stats = statistics()
    ratio_at = {post: cost_ratio(TIMES, shares(stats, post)) for post in (0.15, 0.2, 0.3)}
    # already cheap enough: unchanged
    unchanged = fit_post_threshold(stats, TIMES, 0.15, ratio_at[0.15] + 1e-9)
    assert unchanged == (0.15, pytest.approx(ratio_at[0.15]), True)
    # the limit between the ratios at 0.2 and 0.15: raised to the observed jump 0.2, not further
    limit = (ratio_at[0.15] + ratio_at[0.2]) / 2
    post, ratio, pays = fit_post_threshold(stats, TIMES, 0.15, limit)
    assert (post, pays) == (0.2, True) and ratio == pytest.approx(ratio_at[0.2]) and ratio <= limit
    # below what even accepting every non-flip cheap action costs: full depth
    best = cost_ratio(TIMES, shares(stats, None))
    post, ratio, pays = fit_post_threshold(stats, TIMES, 0.15, best - 0.01)
    assert not pays and post == 0.15 and ratio == pytest.approx(best)


def test_statistics_replay_the_guidance_at_the_demos_chunk_boundaries(dataset):  # noqa: F811
    from vla_kd.policies.skip_calibration import boundary_rows, cheap_path_jumps

    student = student_of(tiny_teacher(), history=2, prior_threshold=0.5, post_threshold=0.1)
    stats = guidance_statistics(student, dataset, frames=512, seed=0)
    assert len(stats.critical) == len(boundary_rows(dataset, 2, 2)) == len(stats.jumps)
    # the cheap path's jumps where the gripper holds are the post calibration's own statistic
    assert np.allclose(stats.jumps[~stats.flips], cheap_path_jumps(student, dataset, frames=512, seed=0))
    # 3 episodes of 12 frames, chunk 2: 18 calls, 3 of them an episode's first
    assert stats.start_share == pytest.approx(3 / 18)
    times = path_times(student, dataset, frames=4)
    assert times.full > 0 and times.skip > 0 and times.first > 0
