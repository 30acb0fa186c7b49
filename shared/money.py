"""Money as integer minor units plus an ISO 4217 currency; never a float."""

from __future__ import annotations

from dataclasses import dataclass

# ISO 4217 minor-unit exponents of the programme currencies.
MINOR_UNIT_EXPONENTS: dict[str, int] = {
    "HKD": 2, "MYR": 2, "THB": 2, "PHP": 2, "VND": 0, "BDT": 2, "NPR": 2, "LKR": 2,
    "KHR": 2, "INR": 2, "IDR": 2, "JPY": 0, "LAK": 2, "MMK": 2, "KRW": 0,
}  # fmt: skip

# Programme country (ISO 3166-1 alpha-2) → local currency.
COUNTRY_CURRENCIES: dict[str, str] = {
    "HK": "HKD", "MY": "MYR", "TH": "THB", "PH": "PHP", "VN": "VND", "BD": "BDT", "NP": "NPR",
    "LK": "LKR", "KH": "KHR", "IN": "INR", "ID": "IDR", "JP": "JPY", "LA": "LAK", "MM": "MMK",
    "KR": "KRW",
}  # fmt: skip

PROGRAMME_COUNTRIES: tuple[str, ...] = tuple(COUNTRY_CURRENCIES)


class MoneyError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class Money:
    currency: str
    amount_minor: int

    def __post_init__(self) -> None:
        if self.currency not in MINOR_UNIT_EXPONENTS:
            raise MoneyError(f"unknown currency {self.currency!r}")
        if not isinstance(self.amount_minor, int) or isinstance(self.amount_minor, bool):
            raise MoneyError("amounts are integer minor units")

    @classmethod
    def from_major(cls, currency: str, amount_major: int) -> Money:
        """Whole major units (as the transfer table states them) to minor units."""
        if currency not in MINOR_UNIT_EXPONENTS:
            raise MoneyError(f"unknown currency {currency!r}")
        return cls(currency, amount_major * 10 ** MINOR_UNIT_EXPONENTS[currency])

    def __add__(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise MoneyError(f"cannot add {other.currency} to {self.currency}")
        return Money(self.currency, self.amount_minor + other.amount_minor)

    def times(self, factor: int) -> Money:
        return Money(self.currency, self.amount_minor * factor)

    def format(self) -> str:
        exponent = MINOR_UNIT_EXPONENTS[self.currency]
        if exponent == 0:
            return f"{self.currency} {self.amount_minor:,}"
        major, minor = divmod(abs(self.amount_minor), 10**exponent)
        sign = "-" if self.amount_minor < 0 else ""
        return f"{self.currency} {sign}{major:,}.{minor:0{exponent}d}"


def transfer_amount(currency: str, base_major: int, top_up_major: int, household_size: int) -> Money:
    """SPEC §5: base + top_up × (min(household_size, 6) − 1), in minor units."""
    if household_size < 1:
        raise MoneyError("household_size must be at least 1")
    return Money.from_major(currency, base_major + top_up_major * (min(household_size, 6) - 1))
