"""Stamping-account password policy, hashing and verification (ledger.passwords)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from ledger.errors import Rejected
from ledger.passwords import hash_password, validate_password, verify_password

PASSWORD = "Timbrado-2024"


def test_hash_password_verifies_the_same_password() -> None:
    """The password a hash was made from verifies against it."""
    stored = hash_password(PASSWORD, cost="fast")
    assert verify_password(PASSWORD, stored) is True


def test_hash_password_refuses_another_password() -> None:
    """A different password does not verify."""
    stored = hash_password(PASSWORD, cost="fast")
    assert verify_password("Timbrado-2025", stored) is False


def test_hash_password_is_case_sensitive() -> None:
    """Upper- and lower-case letters are different passwords."""
    stored = hash_password(PASSWORD, cost="fast")
    assert verify_password(PASSWORD.lower(), stored) is False


def test_hash_password_normal_cost_uses_interactive_scrypt_parameters() -> None:
    """The normal cost stores n=2**14, r=8, p=1 and verifies."""
    stored = hash_password(PASSWORD)
    assert stored.split("$")[:4] == ["scrypt", "16384", "8", "1"]
    assert verify_password(PASSWORD, stored) is True


def test_hash_password_fast_cost_uses_tiny_parameters() -> None:
    """The fast cost (tests and benchmarks only) stores n=2**4."""
    assert hash_password(PASSWORD, cost="fast").split("$")[:4] == ["scrypt", "16", "8", "1"]


def test_hash_password_salts_every_hash() -> None:
    """Hashing one password twice gives two different hashes."""
    assert hash_password(PASSWORD, cost="fast") != hash_password(PASSWORD, cost="fast")


def test_hash_password_does_not_contain_the_plaintext() -> None:
    """The stored hash never carries the password itself."""
    assert PASSWORD not in hash_password(PASSWORD, cost="fast")


def test_verify_password_uses_the_stored_parameters() -> None:
    """A hash made with other work factors (n=32, r=4, p=2) verifies with those factors."""
    salt = bytes(range(16))
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=32, r=4, p=2, dklen=32)
    stored = "$".join(
        (
            "scrypt",
            "32",
            "4",
            "2",
            base64.b64encode(salt).decode(),
            base64.b64encode(digest).decode(),
        )
    )
    assert verify_password(PASSWORD, stored) is True


def test_verify_password_treats_composed_and_decomposed_accents_alike() -> None:
    """'é' typed precomposed or as 'e' plus a combining accent is the same password."""
    stored = hash_password("contraseñé", cost="fast")
    assert verify_password("contrasen\u0303e\u0301", stored) is True


def test_verify_password_refuses_a_hash_of_another_scheme() -> None:
    """A value that is not one of our hashes is an error, not a wrong password."""
    with pytest.raises(ValueError, match="not a password hash"):
        verify_password(PASSWORD, "bcrypt$2b$12$abc")


def test_verify_password_refuses_a_hash_with_bad_base64() -> None:
    """Corrupted salt or digest text is an error, not a wrong password."""
    stored = hash_password(PASSWORD, cost="fast")
    corrupted = stored[: stored.rindex("$") + 1] + "not base64!"
    with pytest.raises(ValueError, match="malformed"):
        verify_password(PASSWORD, corrupted)


def test_verify_password_refuses_oversized_work_factors() -> None:
    """A planted hash cannot make one verification use gigabytes of memory."""
    stored = hash_password(PASSWORD, cost="fast")
    _, _, r, p, salt, digest = stored.split("$")
    planted = "$".join(("scrypt", str(2**30), r, p, salt, digest))
    with pytest.raises(ValueError, match="out of bounds"):
        verify_password(PASSWORD, planted)


def test_verify_password_refuses_a_work_factor_that_is_not_a_power_of_two() -> None:
    """scrypt's n must be a power of two."""
    stored = hash_password(PASSWORD, cost="fast")
    _, _, r, p, salt, digest = stored.split("$")
    with pytest.raises(ValueError, match="out of bounds"):
        verify_password(PASSWORD, "$".join(("scrypt", "17", r, p, salt, digest)))


def test_validate_password_accepts_eight_characters() -> None:
    """Eight characters is the shortest password allowed."""
    validate_password("a" * 8)


def test_validate_password_accepts_128_characters() -> None:
    """128 characters is the longest password allowed."""
    validate_password("a" * 128)


@pytest.mark.parametrize("plaintext", ["", "a" * 7, "a" * 129])
def test_validate_password_rejects_a_length_out_of_bounds(plaintext: str) -> None:
    """Fewer than 8 or more than 128 characters is invalid_command on the password field."""
    with pytest.raises(Rejected) as caught:
        validate_password(plaintext)
    assert caught.value.code == "invalid_command"
    assert caught.value.details == {
        "field": "password",
        "reason": "length",
        "length_min": 8,
        "length_max": 128,
    }


def test_hash_password_applies_the_policy() -> None:
    """A password outside the policy is never hashed."""
    with pytest.raises(Rejected) as caught:
        hash_password("short", cost="fast")
    assert caught.value.code == "invalid_command"


def test_rejection_does_not_carry_the_plaintext() -> None:
    """Neither the message nor the details of a rejection repeat the password."""
    with pytest.raises(Rejected) as caught:
        validate_password("secreto")
    assert "secreto" not in repr(caught.value.to_dict())


def test_verify_password_answers_false_for_a_wrong_password_outside_the_policy() -> None:
    """A wrong password of any length is simply False, not a rejection."""
    stored = hash_password(PASSWORD, cost="fast")
    assert verify_password("x", stored) is False
