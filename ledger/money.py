"""Money at the edges: MXN text ↔ integer centavos, and IVA arithmetic (DESIGN §1).

Inside the ledger money is always an ``int`` of centavos. Text such as ``"1500.00"`` becomes
centavos here, once, and nowhere else; floats never take part because they cannot hold most
decimal fractions exactly.
"""

from __future__ import annotations

import calendar
import re
from datetime import date

from ledger.errors import Rejected

IVA_RATE_PCT_DEFAULT = 16
"""The general IVA rate in Mexico (percent); the border-region rate of 8 % is passed explicitly."""

# Thirteen integer digits (just under ten trillion pesos) is far above any real sale and keeps
# every amount well inside a signed 64-bit column, even after summing millions of them.
_INTEGER_DIGITS_MAX = 13
MONEY_CENTAVOS_MAX = 10 ** (_INTEGER_DIGITS_MAX + 2) - 1
"""The largest amount ``parse_money`` accepts, in centavos (9,999,999,999,999.99 MXN)."""

# Exactly two decimals and no leading zeros, so each amount has one spelling: idempotency compares
# the text the caller gave, and "1500.00" vs "01500.0" must not look like two different amounts.
# fullmatch (not match with "$") so a trailing newline is not accepted; [0-9] is ASCII only.
_MONEY_PATTERN = re.compile(rf"(0|[1-9][0-9]{{0,{_INTEGER_DIGITS_MAX - 1}}})\.([0-9]{{2}})")


def parse_money(text: str, *, field: str = "amount") -> int:
    """Return the centavos of an MXN amount written with exactly two decimals ("1500.00")."""
    # A JSON number arrives here as a float or int; refuse it rather than guess its decimals.
    if not isinstance(text, str):
        raise Rejected(
            "invalid_command",
            f'El importe ({field}) debe ser texto con dos decimales, p. ej. "1500.00".',
            field=field,
            reason="not_text",
        )
    match = _MONEY_PATTERN.fullmatch(text)
    if match is None:
        raise Rejected(
            "invalid_command",
            f'El importe ({field}) debe tener la forma "1500.00": sin signo, '
            "sin separadores de miles y con exactamente dos decimales.",
            field=field,
            reason="format",
        )
    pesos, centavos = match.groups()
    return int(pesos) * 100 + int(centavos)


def format_money(centavos: int) -> str:
    """Return the centavos as MXN text with two decimals (150000 → "1500.00")."""
    sign = "-" if centavos < 0 else ""
    pesos, rest = divmod(abs(centavos), 100)
    return f"{sign}{pesos}.{rest:02d}"


def split_iva(total_centavos: int, rate_pct: int = IVA_RATE_PCT_DEFAULT) -> tuple[int, int]:
    """Return ``(base, iva)`` of an IVA-included total: base = round_half_up(total / 1.16)."""
    _check_rate(rate_pct)
    # base = total * 100 / (100 + rate), rounded to whole centavos; iva takes the remainder so
    # that base + iva is always exactly the total the buyer paid.
    base = _divide_round_half_up(total_centavos * 100, 100 + rate_pct)
    return base, total_centavos - base


def add_iva(base_centavos: int, rate_pct: int = IVA_RATE_PCT_DEFAULT) -> int:
    """Return the IVA-included total of a pre-IVA list price, the IVA rounded half up."""
    _check_rate(rate_pct)
    return base_centavos + _divide_round_half_up(base_centavos * rate_pct, 100)


MONTHS_PER_YEAR = 12


def add_months(day: date, months: int) -> date:
    """``day`` moved ``months`` calendar months on, clamped to the month's last day.

    31 January + 1 month is 28 February (29 in a leap year); 29 February 2028 + 12 months is
    28 February 2029.
    """
    index = day.year * MONTHS_PER_YEAR + (day.month - 1) + months
    year, month_index = divmod(index, MONTHS_PER_YEAR)
    last = calendar.monthrange(year, month_index + 1)[1]
    return date(year, month_index + 1, min(day.day, last))


def whole_months_between(start: date, end: date) -> int:
    """How many whole calendar months fit from ``start`` to ``end`` (0 if ``end`` is earlier).

    A month is whole when ``add_months(start, n)`` does not pass ``end``: 31 January to
    28 February is one whole month, 15 March to 14 April none.
    """
    if end <= start:
        return 0
    months = (end.year - start.year) * MONTHS_PER_YEAR + (end.month - start.month)
    while months > 0 and add_months(start, months) > end:
        months -= 1
    return months


def pro_rata(annual_centavos: int, months: int) -> int:
    """The part of a yearly price for ``months`` whole months, rounded half up to centavos."""
    if months < 0:
        raise ValueError(f"months must not be negative, got {months}")
    return _divide_round_half_up(annual_centavos * months, MONTHS_PER_YEAR)


def subscription_charge(
    annual_centavos: int, start: date, end: date, rate_pct: int = IVA_RATE_PCT_DEFAULT
) -> tuple[int, int]:
    """``(months, total)`` of a yearly pre-IVA price charged from ``start`` until ``end``.

    Whole months only, at least one (a subscription contracted in its last month still pays
    that month), plus IVA: a full year of 1,850.00 is 2,146.00.
    """
    months = max(whole_months_between(start, end), 1)
    return months, add_iva(pro_rata(annual_centavos, months), rate_pct)


def _check_rate(rate_pct: int) -> None:
    # The rate comes from configuration, not from users: a bad one is a programming error.
    if not 0 <= rate_pct <= 100:
        raise ValueError(f"IVA rate must be between 0 and 100 percent, got {rate_pct}")


def _divide_round_half_up(numerator: int, denominator: int) -> int:
    # Integer arithmetic is exact where float division is not. "Half up" follows Decimal's
    # ROUND_HALF_UP (halves move away from zero), so a negative amount (a refund) mirrors its
    # positive counterpart.
    quotient, remainder = divmod(abs(numerator), denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    return -quotient if numerator < 0 else quotient
