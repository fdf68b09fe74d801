"""The demo's people and companies: Mexican names, valid RFCs, phone numbers and profiles.

Everything is drawn from the ``random.Random`` handed in, so the same seed gives the same people.
"""

from __future__ import annotations

import random
import unicodedata
from datetime import date, timedelta
from typing import Any

from stdnum.mx import rfc as stdnum_rfc

from ledger.errors import Rejected
from ledger.rfc import validate_rfc

_FIRST_NAMES = (
    "José", "María", "Juan", "Guadalupe", "Luis", "Ana", "Carlos", "Verónica", "Jorge", "Rosa",
    "Miguel", "Laura", "Alejandro", "Patricia", "Fernando", "Claudia", "Ricardo", "Adriana",
    "Héctor", "Gabriela", "Raúl", "Mónica", "Sergio", "Leticia", "Arturo", "Silvia", "Eduardo",
    "Norma", "Roberto", "Alejandra", "Víctor", "Araceli", "Óscar", "Elena", "Javier", "Sofía",
)  # fmt: skip
_SURNAMES = (
    "Hernández", "García", "Martínez", "López", "González", "Pérez", "Rodríguez", "Sánchez",
    "Ramírez", "Cruz", "Flores", "Gómez", "Morales", "Vázquez", "Reyes", "Jiménez", "Torres",
    "Díaz", "Gutiérrez", "Ruiz", "Mendoza", "Aguilar", "Ortiz", "Moreno", "Castillo", "Romero",
    "Álvarez", "Méndez", "Chávez", "Rivera", "Juárez", "Ramos", "Domínguez", "Herrera", "Medina",
)  # fmt: skip
_TRADES = (
    "Abarrotes", "Ferretería", "Papelería", "Farmacia", "Refaccionaria", "Taller Mecánico",
    "Consultorio Dental", "Despacho Contable", "Tortillería", "Panadería", "Carnicería",
    "Estética", "Materiales para Construcción", "Transportes", "Distribuidora de Alimentos",
    "Agencia de Viajes", "Muebles", "Cafetería", "Lavandería", "Imprenta", "Óptica",
)  # fmt: skip
_PLACES = (
    "del Centro", "La Esperanza", "San Miguel", "El Progreso", "Guadalupe", "del Norte",
    "Santa Fe", "Las Palmas", "La Joya", "Juárez", "Reforma", "del Valle", "Hidalgo", "Morelos",
)  # fmt: skip
_HOMOCLAVE = "ABCDEFGHJKLMNPRSTUVWXYZ123456789"
RFC_ATTEMPTS_MAX = 50
"""Draws of a date and a homoclave before giving up on an RFC (one is nearly always enough)."""


def ascii_letters(text: str) -> str:
    """The ASCII letters and digits of ``text``, accents dropped: ``"Óscar"`` -> ``"Oscar"``."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and c.isalnum())


def _rfc(rng: random.Random, letters: str, since: date, years: int) -> str:
    """A valid RFC: ``letters``, a date in the ``years`` from ``since``, a homoclave, a check
    digit. Letters that spell a forbidden word get an X for their last one, as the SAT does."""
    for _ in range(RFC_ATTEMPTS_MAX):
        day = since + timedelta(days=rng.randrange(365 * years))
        homoclave = "".join(rng.choice(_HOMOCLAVE) for _ in range(2))
        stem = f"{letters}{day:%y%m%d}{homoclave}"
        candidate = stem + str(stdnum_rfc.calc_check_digit(stem))
        try:
            if not validate_rfc(candidate).warnings:
                return candidate
        except Rejected:
            letters = letters[:-1] + "X"
    raise AssertionError("no valid RFC generated")


def person_rfc(rng: random.Random, first: str, paternal: str, maternal: str) -> str:
    """A valid persona física RFC (name letters, birth date, homoclave, check digit)."""
    letters = ascii_letters(paternal)[:2] + ascii_letters(maternal)[:1] + ascii_letters(first)[:1]
    return _rfc(rng, letters.upper(), date(1950, 1, 1), 50)


def company_rfc(rng: random.Random, name: str) -> str:
    """A valid persona moral RFC (initials, founding date, homoclave, check digit)."""
    words = [w for w in map(ascii_letters, name.split()) if len(w) > 2] or ["XXX"]
    letters = "".join(w[0] for w in words)[:3].upper().ljust(3, "X")
    return _rfc(rng, letters, date(1980, 1, 1), 40)


def phone(rng: random.Random) -> str:
    """A ten-digit Mexican number in one of six area codes: ``55 1234 5678``."""
    area = rng.choice(("55", "33", "81", "222", "442", "999"))
    rest = "".join(rng.choice("0123456789") for _ in range(10 - len(area)))
    return f"{area} {rest[:4]} {rest[4:]}"


def company_profile(rng: random.Random, name: str, email_domain: str) -> dict[str, Any]:
    """A distributor's or the platform's profile: name, RFC, e-mail, postal code, phone."""
    return {
        "name": name,
        "rfc": company_rfc(rng, name),
        "email": f"contacto@{email_domain}.mx",
        "postal_code": f"{rng.randrange(1000, 99999):05d}",
        "phone": phone(rng),
    }


def client_profile(rng: random.Random) -> dict[str, Any]:
    """A client's profile: a company (about a third) with its legal representative, or a
    person with a trade name; some with a financial contact."""
    first, paternal, maternal = (
        rng.choice(_FIRST_NAMES),
        rng.choice(_SURNAMES),
        rng.choice(_SURNAMES),
    )
    person = f"{first} {paternal} {maternal}"
    email_user = ascii_letters(first).lower() + "." + ascii_letters(paternal).lower()
    if rng.random() < 0.35:
        name = f"{rng.choice(_TRADES)} {rng.choice(_PLACES)} SA de CV"
        profile: dict[str, Any] = {
            "name": name,
            "rfc": company_rfc(rng, name),
            "regimen_fiscal": "601",
            "legal_rep": {"name": person, "phone": phone(rng)},
        }
    else:
        profile = {
            "name": person,
            "rfc": person_rfc(rng, first, paternal, maternal),
            "regimen_fiscal": "612",
            "trade_name": f"{rng.choice(_TRADES)} {rng.choice(_PLACES)}",
        }
    profile.update(
        email=f"{email_user}{rng.randrange(100)}@example.com",
        postal_code=f"{rng.randrange(1000, 99999):05d}",
        uso_cfdi="G03",
        phone=phone(rng),
    )
    if rng.random() < 0.3:
        profile["financial_contact"] = {
            "name": f"{rng.choice(_FIRST_NAMES)} {rng.choice(_SURNAMES)}",
            "email": f"pagos{rng.randrange(1000)}@example.com",
            "phone": phone(rng),
        }
    return profile
