"""Search text, folding and page bounds of the directory (no database)."""

from __future__ import annotations

import pytest

from ledger.errors import Rejected
from ledger.projections.base import check_page, like_pattern, normalise, search_terms
from ledger.projections.directory import SORTS, client_search_text


def test_normalise_folds_case_and_accents() -> None:
    """'Pérez ÑANDÚ' folds to 'perez nandu'."""
    assert normalise("  Pérez   ÑANDÚ ") == "perez nandu"


def test_like_pattern_escapes_wildcards() -> None:
    """A user's % and _ match themselves, not anything."""
    assert like_pattern("50%_a\\b") == "%50\\%\\_a\\\\b%"


def test_search_terms_split_into_folded_words() -> None:
    """Every word of a search must match on its own."""
    assert search_terms("José  GARCÍA") == ["jose", "garcia"]


def test_an_empty_search_has_no_terms() -> None:
    """None and blanks search nothing (everything matches)."""
    assert search_terms(None) == []
    assert search_terms("   ") == []


def test_an_overlong_search_is_rejected() -> None:
    """A search is bounded."""
    with pytest.raises(Rejected) as e:
        search_terms("x" * 201)
    assert e.value.code == "invalid_command"


def test_client_search_text_covers_contacts_and_phone_digits() -> None:
    """Names, trade name, RFC, e-mails, phones (with their digits) and contacts are searchable."""
    text = client_search_text(
        {
            "name": "María López",
            "trade_name": "Papelería Lupita",
            "rfc": "LOMA800101AB1",
            "email": "maria@example.com",
            "extra_emails": ["compras@example.com"],
            "phone": "(55) 1234-5678",
            "financial_contact": {"name": "Óscar Ruiz", "email": "pagos@example.com"},
            "technical_contact": {"name": "Ana", "phone": "33 9999 0000"},
        }
    )
    for fragment in (
        "maria lopez",
        "papeleria lupita",
        "loma800101ab1",
        "compras@example.com",
        "5512345678",
        "oscar ruiz",
        "pagos@example.com",
        "3399990000",
    ):
        assert fragment in text


def test_limit_above_the_bound_is_rejected() -> None:
    """Pages hold at most 500 rows."""
    with pytest.raises(Rejected) as e:
        check_page(501, 0)
    assert e.value.code == "invalid_command"


def test_negative_offset_is_rejected() -> None:
    """Offsets start at zero."""
    with pytest.raises(Rejected) as e:
        check_page(10, -1)
    assert e.value.code == "invalid_command"


def test_the_twelve_sort_orders_of_the_design_exist() -> None:
    """DESIGN §6 lists twelve sort keys."""
    assert len(SORTS) == 12
    both_ways = ("balance", "points", "last_purchase", "created", "last_emission")
    assert set(SORTS) == {"name", "nic"} | {
        f"{k}_{way}" for k in both_ways for way in ("desc", "asc")
    }
