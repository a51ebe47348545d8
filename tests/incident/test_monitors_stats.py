"""Drift statistics on histograms against values worked out by hand, and the window
arithmetic of the shift calendar."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from incident.monitors import stats
from incident.telemetry.shifts import ShiftCalendar


def test_psi_by_hand() -> None:
    # p = (0.5, 0.5), q = (0.9, 0.1): 0.4 ln 1.8 + (-0.4) ln 0.2
    assert stats.psi([50, 50], [90, 10]) == pytest.approx(0.4 * math.log(1.8) - 0.4 * math.log(0.2))
    assert stats.psi([5, 3, 2], [5, 3, 2]) == 0.0
    # An empty current bin is floored at eps, not infinite: (1e-4 - 0.5) ln(1e-4 / 0.5) + ...
    expected = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + (1 - 0.5) * math.log(1 / 0.5)
    assert stats.psi([1, 1], [0, 4]) == pytest.approx(expected, rel=1e-6)


def test_ks_by_hand() -> None:
    # CDFs (0.2, 0.5, 1.0) and (0.6, 0.9, 1.0): largest gap 0.4
    assert stats.ks([2, 3, 5], [6, 3, 1]) == pytest.approx(0.4)
    assert stats.ks([1, 1], [1, 1]) == 0.0


def test_wasserstein_by_hand() -> None:
    # All mass moves from the first bin to the third, two widths of 0.1 away.
    assert stats.wasserstein([10, 0, 0], [0, 0, 10], width=0.1) == pytest.approx(0.2)
    # Half the mass moves one bin: 0.5 * width.
    assert stats.wasserstein([2, 0], [1, 1], width=0.05) == pytest.approx(0.025)


def test_an_empty_histogram_has_no_distribution() -> None:
    with pytest.raises(ValueError, match="no counts"):
        stats.psi([0, 0], [1, 1])


def test_mean_and_standardised_shift_by_hand() -> None:
    # 1, 2, 3: mean 2, population sd sqrt(2/3)
    mean, sd = stats.mean_sd(3, 6, 14)
    assert (mean, sd) == (pytest.approx(2.0), pytest.approx(math.sqrt(2 / 3)))
    # Current 4, 5, 6: mean 5, three reference sds away.
    assert stats.standardised_shift((3, 6, 14), (3, 15, 77)) == pytest.approx(3 / math.sqrt(2 / 3))
    # A constant reference: the spread floor is 1% of its mean, not zero.
    assert stats.standardised_shift((2, 2, 2), (2, 2.2, 2.42)) == pytest.approx(10.0)


def test_shifts_wrap_midnight_and_follow_the_plant_timezone() -> None:
    cal = ShiftCalendar(("06:00", "14:00", "22:00"), ("early", "late", "night"), "UTC")
    night = cal.shift_of(datetime(2026, 11, 3, 5, 59, tzinfo=UTC))
    assert (night.name, night.start, night.end) == (
        "night",
        datetime(2026, 11, 2, 22, tzinfo=UTC),
        datetime(2026, 11, 3, 6, tzinfo=UTC),
    )
    assert cal.shift_of(datetime(2026, 11, 3, 6, 0, tzinfo=UTC)).name == "early"
    berlin = ShiftCalendar(("06:00", "14:00", "22:00"), ("early", "late", "night"), "Europe/Berlin")
    # 05:30 UTC is 06:30 in Berlin (CET): already the early shift, which began 05:00 UTC.
    early = berlin.shift_of(datetime(2026, 11, 3, 5, 30, tzinfo=UTC))
    assert (early.name, early.start) == ("early", datetime(2026, 11, 3, 5, tzinfo=UTC))
    with pytest.raises(ValueError, match="same, non-zero length"):
        ShiftCalendar(("06:00",), ("a", "b"), "UTC")
