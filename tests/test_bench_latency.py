"""The single-decision latency benchmark (bench/latency.py) compares like with like: each
hand-written decision gives ddm's decision on the benchmark's sample. Times are not tested."""

from __future__ import annotations

import numpy as np
import pytest

from ddm.bench import latency


@pytest.mark.parametrize("name", latency.NAMES)
def test_the_hand_written_decision_is_ddms_decision(name):
    ours, theirs, close = latency._cases(name)
    got, want = np.asarray(ours()), np.asarray(theirs())
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=close)


def test_a_row_reports_both_sides_and_the_targets():
    row = latency.bench("hedge_net", quick=True)
    assert row["calls"] >= 1000 and row["ddm_us"] > 0 and row["hand_us"] > 0
    assert row["ratio"] == pytest.approx(row["ddm_us"] / row["hand_us"], rel=0.01)
    assert row["agree"] and row["correct"]
    assert set(latency.row(row)[0:1]) == {"latency.hedge_net"}
