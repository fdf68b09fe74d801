"""Money text ↔ centavos and IVA arithmetic (ledger.money)."""

from __future__ import annotations

from datetime import date

import pytest

from ledger.errors import Rejected
from ledger.money import (
    MONEY_CENTAVOS_MAX,
    add_iva,
    add_months,
    format_money,
    parse_money,
    pro_rata,
    split_iva,
    subscription_charge,
    whole_months_between,
)


def test_parse_money_turns_two_decimal_text_into_centavos() -> None:
    """'1500.00' becomes 150000 centavos."""
    assert parse_money("1500.00") == 150_000


def test_parse_money_accepts_amounts_below_one_peso() -> None:
    """'0.05' becomes 5 centavos."""
    assert parse_money("0.05") == 5


def test_parse_money_accepts_zero() -> None:
    """'0.00' is zero centavos; whether zero is allowed is the caller's rule."""
    assert parse_money("0.00") == 0


def test_parse_money_accepts_the_largest_amount() -> None:
    """Thirteen integer digits is the upper bound."""
    assert parse_money("9999999999999.99") == MONEY_CENTAVOS_MAX


@pytest.mark.parametrize(
    "text",
    [
        "1500",  # no decimals
        "1500.0",  # one decimal
        "1500.000",  # three decimals
        "-1.00",  # negative
        "+1.00",  # explicit sign
        "1e3",  # exponent
        "1.5e2",
        "1,500.00",  # thousands separator
        "01500.00",  # leading zero: two spellings of one amount
        ".50",
        " 1.00",  # surrounding blanks
        "1.00\n",
        "NaN",
        "",
        "\u0661.\u0660\u0660",  # Arabic-Indic digits are digits to Python, not to the ledger
        "10000000000000.00",  # fourteen integer digits
    ],
)
def test_parse_money_rejects_malformed_text(text: str) -> None:
    """Anything but plain digits with exactly two decimals is invalid_command."""
    with pytest.raises(Rejected) as caught:
        parse_money(text)
    assert caught.value.code == "invalid_command"
    assert caught.value.details["field"] == "amount"


def test_parse_money_rejects_a_float() -> None:
    """A JSON number (float) is refused rather than guessed at."""
    with pytest.raises(Rejected) as caught:
        parse_money(1500.0)  # type: ignore[arg-type]
    assert caught.value.code == "invalid_command"
    assert caught.value.details["reason"] == "not_text"


def test_parse_money_names_the_field_in_the_rejection() -> None:
    """The caller's field name is carried in the rejection details."""
    with pytest.raises(Rejected) as caught:
        parse_money("12", field="price")
    assert caught.value.details["field"] == "price"


def test_format_money_writes_two_decimals() -> None:
    """150000 centavos is '1500.00'."""
    assert format_money(150_000) == "1500.00"


def test_format_money_pads_centavos() -> None:
    """5 centavos is '0.05'."""
    assert format_money(5) == "0.05"


def test_format_money_writes_negative_amounts_with_a_sign() -> None:
    """-5 centavos is '-0.05', not '-1.95' as floor division would give."""
    assert format_money(-5) == "-0.05"


def test_format_money_inverts_parse_money() -> None:
    """Formatting parsed text gives the same text back."""
    assert format_money(parse_money("2850.10")) == "2850.10"


def test_split_iva_of_one_thousand_pesos() -> None:
    """1000.00 IVA included is 862.07 base plus 137.93 IVA (DESIGN §1)."""
    assert split_iva(100_000) == (86_207, 13_793)


def test_split_iva_parts_add_up_to_the_total() -> None:
    """Base plus IVA is always exactly the total."""
    for total in range(0, 50_000, 7):
        base, iva = split_iva(total)
        assert base + iva == total


def test_split_iva_rounds_a_fraction_above_half_up() -> None:
    """3.00 total is 258.62 centavos of base, which round up to 2.59."""
    assert split_iva(300) == (259, 41)


def test_split_iva_rounds_a_fraction_below_half_down() -> None:
    """1.00 total is 86.21 centavos of base, which round down to 0.86."""
    assert split_iva(100) == (86, 14)


def test_split_iva_rounds_an_exact_half_up() -> None:
    """An exact half centavo rounds up (at 100 %, 0.03 total is 1.5 centavos of base)."""
    # At 16 % no total gives an exact half (100 * t ≡ 58 mod 116 has no solution), so a rate
    # where halves occur shows the tie-breaking.
    assert split_iva(3, rate_pct=100) == (2, 1)


def test_split_iva_mirrors_negative_totals() -> None:
    """A refund splits like the sale it reverses, with signs flipped."""
    assert split_iva(-100_000) == (-86_207, -13_793)


def test_split_iva_at_zero_rate_is_all_base() -> None:
    """With a 0 % rate the whole total is base."""
    assert split_iva(12_345, rate_pct=0) == (12_345, 0)


def test_split_iva_refuses_an_impossible_rate() -> None:
    """A rate outside 0 to 100 % is a programming error."""
    with pytest.raises(ValueError, match="IVA rate"):
        split_iva(100, rate_pct=-1)


def test_add_iva_adds_sixteen_percent() -> None:
    """A 1000.00 list price is 1160.00 with IVA."""
    assert add_iva(100_000) == 116_000


def test_add_iva_rounds_a_fraction_below_half_down() -> None:
    """0.03 base has 0.48 centavos of IVA, which round down to nothing."""
    assert add_iva(3) == 3


def test_add_iva_rounds_a_fraction_above_half_up() -> None:
    """0.04 base has 0.64 centavos of IVA, which round up to one."""
    assert add_iva(4) == 5


def test_add_iva_rounds_an_exact_half_up() -> None:
    """An exact half centavo of IVA rounds up (at 50 %, 0.01 base has 0.5 centavos)."""
    # At 16 % the IVA is never an exact half centavo (16 * b ≡ 50 mod 100 has no solution).
    assert add_iva(1, rate_pct=50) == 2


def test_add_iva_then_split_iva_gives_the_base_back() -> None:
    """Splitting an IVA-included price built by add_iva recovers the list price."""
    for base in range(30_000):
        assert split_iva(add_iva(base))[0] == base


# Pro rata by whole months (subscriptions) -----------------------------------------------------


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2026, 1, 31), 1, date(2026, 2, 28)),  # clamped to the shorter month
        (date(2028, 1, 31), 1, date(2028, 2, 29)),  # leap year
        (date(2028, 2, 29), 12, date(2029, 2, 28)),  # a leap day a year on
        (date(2028, 2, 29), 48, date(2032, 2, 29)),  # four years on: a leap day again
        (date(2026, 11, 30), 3, date(2027, 2, 28)),  # across the year end
        (date(2026, 3, 15), 0, date(2026, 3, 15)),
    ],
)
def test_add_months_clamps_to_the_last_day_of_the_month(
    day: date, months: int, expected: date
) -> None:
    """A month on from the 31st is the month's last day; leap days follow the calendar."""
    assert add_months(day, months) == expected


@pytest.mark.parametrize(
    ("start", "end", "months"),
    [
        (date(2016, 4, 12), date(2017, 4, 12), 12),  # the seed's MKL Dóminus receipt
        (date(2016, 4, 13), date(2017, 4, 12), 11),  # one day short of a year
        (date(2026, 1, 31), date(2026, 2, 28), 1),  # 31 Jan → 28 Feb is a whole month
        (date(2026, 1, 31), date(2026, 2, 27), 0),
        (date(2028, 1, 31), date(2028, 2, 28), 0),  # in a leap year February has a 29th
        (date(2028, 1, 31), date(2028, 2, 29), 1),
        (date(2028, 2, 29), date(2029, 2, 28), 12),  # leap day to the next year's last day
        (date(2026, 3, 15), date(2026, 4, 14), 0),
        (date(2026, 3, 15), date(2026, 4, 15), 1),
        (date(2026, 1, 5), date(2027, 1, 31), 12),
        (date(2026, 6, 1), date(2026, 5, 1), 0),  # end before start
    ],
)
def test_whole_months_between_counts_complete_calendar_months(
    start: date, end: date, months: int
) -> None:
    """Only complete months count, with month ends and leap years as the calendar has them."""
    assert whole_months_between(start, end) == months


def test_pro_rata_rounds_half_up_to_centavos() -> None:
    """7/12 of 1,999.00 is 1,166.0833… → 1,166.08; 1/12 of 0.06 is 0.005 → 0.01."""
    assert pro_rata(199_900, 7) == 116_608
    assert pro_rata(6, 1) == 1
    assert pro_rata(185_000, 12) == 185_000


def test_a_full_year_of_mkl_dominus_is_2146_with_iva() -> None:
    """1,850.00 for the 12 months from 12 April 2016 to 12 April 2017, plus 16 % IVA."""
    assert subscription_charge(185_000, date(2016, 4, 12), date(2017, 4, 12)) == (12, 214_600)


def test_a_subscription_charges_at_least_one_month() -> None:
    """Contracted with 10 days left, it pays one month: 1,999.00 / 12 = 166.58, + IVA 193.23."""
    assert subscription_charge(199_900, date(2026, 1, 21), date(2026, 1, 31)) == (1, 19_323)


def test_seven_months_of_multinivel() -> None:
    """7 whole months of 1,999.00 is 1,166.08 before IVA, 1,352.65 with it."""
    assert subscription_charge(199_900, date(2026, 6, 20), date(2027, 1, 31)) == (7, 135_265)
