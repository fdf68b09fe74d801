"""CPD (consumo promedio diario) and DR (días restantes) exactly as DESIGN §6 defines them."""

from __future__ import annotations

from datetime import date, timedelta

from ledger.projections.consumption import cpd_and_days_remaining, window

TODAY = date(2026, 3, 15)


def _cpd(first_days_ago: int | None, stamps: int, balance: int = 1000, unlimited: bool = False):
    first = None if first_days_ago is None else TODAY - timedelta(days=first_days_ago)
    return cpd_and_days_remaining(
        first_day=first, window_stamps=stamps, today=TODAY, balance=balance, unlimited=unlimited
    )


def test_no_consumption_gives_no_cpd() -> None:
    """A CTI that never consumed has neither CPD nor DR."""
    assert _cpd(None, 0) == (None, None)


def test_fewer_than_seven_complete_days_give_no_cpd() -> None:
    """Six complete days (first consumption six days ago) are too few."""
    assert _cpd(6, 60) == (None, None)


def test_first_consumption_today_gives_no_cpd() -> None:
    """Today is not complete: a first consumption today is zero days of history."""
    assert _cpd(0, 0) == (None, None)


def test_seven_complete_days_average_over_seven() -> None:
    """From the first day to yesterday, seven days: stamps / 7."""
    assert _cpd(7, 70, balance=95) == (10.0, 9)


def test_twenty_nine_days_average_over_twenty_nine() -> None:
    """d = 29 (< 30) divides by 29, not 30."""
    cpd, days_remaining = _cpd(29, 58, balance=100)
    assert cpd == 2.0
    assert days_remaining == 50


def test_thirty_or_more_days_average_over_thirty() -> None:
    """With a month of history or more, the last 30 complete days / 30."""
    assert _cpd(30, 90, balance=10) == (3.0, 3)
    assert _cpd(400, 90, balance=10) == (3.0, 3)


def test_days_remaining_is_floored_with_integers() -> None:
    """DR = floor(balance / CPD) computed exactly: 100 / (7/30) is 428.57..., so 428."""
    cpd, days_remaining = _cpd(45, 7, balance=100)
    assert cpd == 7 / 30
    assert days_remaining == 428


def test_days_remaining_exact_division_is_not_rounded_down_a_day() -> None:
    """9 stamps at 9/7 a day last exactly 7 days (a float division gives 6.999...)."""
    assert _cpd(7, 9, balance=9)[1] == 7


def test_zero_cpd_gives_no_days_remaining() -> None:
    """A CTI idle for the whole window has CPD 0 and no DR."""
    assert _cpd(40, 0, balance=500) == (0.0, None)


def test_unlimited_account_has_cpd_but_no_days_remaining() -> None:
    """Unlimited accounts hold no balance: DR is none, CPD still shows their usage."""
    assert _cpd(40, 300, balance=0, unlimited=True) == (10.0, None)


def test_empty_balance_has_zero_days_remaining() -> None:
    """A CTI with no stamps left has 0 days."""
    assert _cpd(40, 300, balance=0) == (10.0, 0)


def test_window_is_the_thirty_days_before_today() -> None:
    """The window ends yesterday and starts 30 days before today."""
    assert window(TODAY) == (date(2026, 2, 13), date(2026, 3, 14))
