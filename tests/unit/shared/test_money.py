"""Money is integer minor units plus an ISO 4217 currency (SPEC §5 transfer values)."""

import pytest

from shared.money import COUNTRY_CURRENCIES, MINOR_UNIT_EXPONENTS, Money, MoneyError, transfer_amount


def test_zero_decimal_currencies_carry_no_minor_units():
    assert transfer_amount("VND", 2_000_000, 400_000, 3) == Money("VND", 2_800_000)
    assert transfer_amount("JPY", 12_000, 2_400, 1) == Money("JPY", 12_000)
    assert transfer_amount("KRW", 100_000, 20_000, 30) == Money("KRW", 200_000)


def test_two_decimal_currencies_are_counted_in_cents():
    assert transfer_amount("HKD", 1000, 200, 2) == Money("HKD", 120_000)
    assert transfer_amount("MYR", 400, 80, 6) == Money("MYR", 80_000)


def test_household_top_up_stops_at_six():
    assert transfer_amount("PHP", 5000, 1000, 6) == transfer_amount("PHP", 5000, 1000, 12)


def test_floats_are_refused():
    with pytest.raises(MoneyError):
        Money("HKD", 10.5)  # type: ignore[arg-type]


def test_currencies_do_not_mix():
    with pytest.raises(MoneyError):
        Money("HKD", 1) + Money("MYR", 1)


def test_every_programme_country_has_a_currency_with_a_known_exponent():
    assert len(COUNTRY_CURRENCIES) == 15
    assert all(currency in MINOR_UNIT_EXPONENTS for currency in COUNTRY_CURRENCIES.values())


def test_amounts_format_for_people():
    assert Money("HKD", 120_050).format() == "HKD 1,200.50"
    assert Money("VND", 2_800_000).format() == "VND 2,800,000"
