"""A realistic synthetic programme with its ground truth, for the demo, the tests and the benchmark.

Several CSO partners across the programme countries register migrant workers in batches: names in
their own scripts and spellings, documents written in different formats, cross-partner duplicates
of every SPEC §4 kind (same document; same name and birth date; a transitive chain; a late row that
links two people already paid), near misses that are different people, minors, in-kind help,
failing payout accounts, and invalid rows.

The ground truth is computed by a reference model that applies SPEC §4–§6 to the rows in the
order the batches are submitted. Every figure is independent of processing order inside a batch
because no batch holds two rows of one person; submit batches one after another (draining between
them) and the pipeline must reproduce the truth exactly.
"""

from __future__ import annotations

import csv
import io
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from shared.identity import age_on, normalise_document_number, normalise_name
from shared.money import COUNTRY_CURRENCIES, transfer_amount

COLUMNS = [
    "partner_ref", "given_name", "family_name", "sex", "date_of_birth", "nationality", "country", "id_type",
    "id_number", "phone", "household_size", "vulnerabilities", "consent", "assistance", "payout_method",
    "payout_account", "registered_on",
]  # fmt: skip

# SPEC §5 transfer table, restated here independently as the oracle's own copy (major units).
TRANSFER_TABLE: dict[str, tuple[int, int]] = {
    "HK": (1000, 200), "MY": (400, 80), "TH": (3000, 600), "PH": (5000, 1000), "VN": (2_000_000, 400_000),
    "BD": (8000, 1600), "NP": (10000, 2000), "LK": (20000, 4000), "KH": (300_000, 60_000), "IN": (6000, 1200),
    "ID": (1_200_000, 240_000), "JP": (12000, 2400), "LA": (1_500_000, 300_000), "MM": (150_000, 30_000),
    "KR": (100_000, 20_000),
}  # fmt: skip

VULNERABILITIES = [
    "job_loss",
    "wage_theft",
    "medical",
    "pregnant",
    "disability",
    "undocumented",
    "stranded",
    "debt_bondage",
    "gbv",
]
IN_KIND = ["food_kit", "hygiene_kit", "remediation", "safe_migration_info"]

# Given names and family names in the scripts and spellings people use.
NAMES: dict[str, dict[str, list[str]]] = {
    "VNM": {
        "given": ["Văn An", "Thị Hoa", "Minh Tuấn", "Thị Lan", "Đức Anh", "Thu Hà", "Quốc Bảo", "Ngọc Mai", "Hữu Phước", "Thị Hằng"],
        "family": ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Đặng", "Vũ", "Bùi", "Đỗ", "Ngô"],
    },
    "PHL": {
        "given": ["Maria Cristina", "Jose", "Rowena", "Mark Anthony", "Jenalyn", "Ronaldo", "Analyn", "Ma. Theresa", "Jomar", "Liezl"],
        "family": ["Dela Cruz", "Santos", "Reyes", "Bautista", "Garcia", "Mendoza", "Villanueva", "Castillo", "Ramos", "Aquino"],
    },
    "IDN": {
        "given": ["Siti", "Dewi", "Agus", "Sri", "Budi", "Nur", "Eko", "Wati", "Rina", "Joko"],
        "family": ["Rahmawati", "Susanti", "Santoso", "Wahyuni", "Hidayat", "Lestari", "Saputra", "Kurniasih", "Setiawan", ""],
    },
    "MMR": {
        "given": ["Aung", "Thandar", "Kyaw", "Moe", "Zaw", "Hnin", "Htet", "Su", "Min", "Ei"],
        "family": ["Win", "Aye", "Naing", "Myint", "Oo", "Wai", "Lin", "Mon", "Htun", "Phyo"],
    },
    "THA": {
        "given": ["สมชาย", "สุดา", "ประเสริฐ", "มาลี", "วิชัย", "นภา", "สมศักดิ์", "จันทร์", "อรุณ", "ศรี"],
        "family": ["ใจดี", "ศรีสุข", "แก้วมณี", "บุญมา", "ทองดี", "สุขสวัสดิ์", "พรหมมา", "จันทร์แก้ว", "ศรีทอง", "มีสุข"],
    },
    "NPL": {
        "given": ["Ram", "Sita", "Bishnu", "Kamala", "Hari", "Gita", "Krishna", "Laxmi", "Suman", "Anita"],
        "family": ["Shrestha", "Tamang", "Gurung", "Rai", "Magar", "Thapa", "Sherpa", "Adhikari", "Karki", "Limbu"],
    },
    "KHM": {
        "given": ["Sokha", "Chanthy", "Dara", "Sreymom", "Vibol", "Bopha", "Rithy", "Sophea", "Piseth", "Kunthea"],
        "family": ["Chan", "Sok", "Kim", "Heng", "Meas", "Nhem", "Pich", "Chea", "Keo", "Ly"],
    },
    "BGD": {
        "given": ["Abdul", "Rahima", "Mohammad", "Fatema", "Rafiq", "Nasrin", "Jahid", "Shirin", "Kamal", "Salma"],
        "family": ["Hossain", "Begum", "Islam", "Akter", "Rahman", "Khatun", "Uddin", "Sultana", "Ahmed", "Miah"],
    },
    "LAO": {
        "given": ["Somphone", "Bounmy", "Khamla", "Noy", "Souksavanh", "Phet", "Vanh", "Daovone", "Sengdao", "Kham"],
        "family": ["Phommachanh", "Sisavath", "Vongsa", "Keomany", "Inthavong", "Sayavong", "Chanthala", "Douangdy", "Phimmasone", "Luangrath"],
    },
}  # fmt: skip

# Where each partner works, and the nationalities it mostly serves there.
PARTNERS: list[tuple[str, list[str], list[str]]] = [
    ("Harbour Migrant Workers Aid", ["HK"], ["PHL", "IDN"]),
    ("Klang Valley Migrant Support", ["MY"], ["IDN", "MMR", "NPL", "BGD"]),
    ("Mekong Labour Rights Network", ["TH"], ["MMR", "KHM", "LAO"]),
    ("Luzon Overseas Workers Desk", ["PH"], ["PHL"]),
    ("Red River Returnee Centre", ["VN"], ["VNM"]),
    ("Penang Shelter Collective", ["MY", "TH"], ["VNM", "MMR", "IDN"]),
    ("Dhaka Outbound Help", ["BD", "NP"], ["BGD", "NPL"]),
    ("Phnom Penh Returnee Services", ["KH", "LA"], ["KHM", "LAO"]),
]

REGISTRATION_START = date(2026, 1, 5)
REGISTRATION_DAYS = 80  # through late March; birthdays fall from May on, so ages never change inside it


@dataclass
class Person:
    index: int
    given: str
    family: str
    sex: str
    dob: date
    nationality: str
    id_type: str
    id_number: str
    household_size: int
    phone: str | None


@dataclass
class Row:
    person: Person
    partner: int
    values: dict[str, str]
    valid: bool = True


@dataclass
class Batch:
    partner: int
    partner_name: str
    rows: list[Row] = field(default_factory=list)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow(row.values)
        return out.getvalue()

    @property
    def accepted(self) -> int:
        return sum(1 for row in self.rows if row.valid)

    @property
    def rejected(self) -> int:
        return sum(1 for row in self.rows if not row.valid)


@dataclass
class Programme:
    partners: list[str]
    batches: list[Batch]
    truth: dict[str, Any]

    @property
    def rows(self) -> int:
        return sum(len(batch.rows) for batch in self.batches)


def _strip_marks(text: str) -> str:
    import unicodedata

    decomposed = unicodedata.normalize("NFKD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(char for char in decomposed if not unicodedata.combining(char))


class _Builder:
    def __init__(self, persons: int, seed: int) -> None:
        self.random = random.Random(seed)
        self.target = persons
        self.people: list[Person] = []
        self.batches: list[Batch] = []
        self.refs: dict[int, int] = defaultdict(int)
        self.documents: set[tuple[str, str]] = set()
        self.name_keys: set[tuple[str, date, str]] = set()

    # ---- people --------------------------------------------------------------------------

    def _document(self, nationality: str) -> tuple[str, str]:
        r = self.random
        id_type = r.choices(["passport", "national_id", "work_permit", "none"], [55, 20, 20, 5])[0]
        if id_type == "none":
            return id_type, ""
        while True:
            number = f"{nationality[0]}{r.randint(1_000_000, 99_999_999)}"
            if (id_type, number) not in self.documents:
                self.documents.add((id_type, number))
                return id_type, number

    def claim_name(self, nationality: str, dob: date, given: str, family: str) -> bool:
        """Whether this name and birth date are still free (so rule 2 joins only intended rows)."""
        key = (nationality, dob, normalise_name(given, family))
        if key in self.name_keys:
            return False
        self.name_keys.add(key)
        return True

    def new_person(self, nationality: str, *, minor: bool = False) -> Person:
        r = self.random
        names = NAMES[nationality]
        while True:
            age = (
                r.randint(14, 16)
                if minor
                else r.choices(
                    [r.randint(18, 29), r.randint(30, 44), r.randint(45, 59), r.randint(60, 72)],
                    [40, 35, 18, 7],
                )[0]
            )
            dob = date(2025 - age, r.randint(5, 12), r.randint(1, 28))
            given, family = r.choice(names["given"]), r.choice(names["family"])
            if self.claim_name(nationality, dob, given, family):
                break
        id_type, id_number = self._document(nationality)
        person = Person(
            index=len(self.people),
            given=given,
            family=family,
            sex=r.choices(["F", "M", "X"], [56, 43, 1])[0],
            dob=dob,
            nationality=nationality,
            id_type=id_type,
            id_number=id_number,
            household_size=r.choices(range(1, 10), [20, 15, 15, 15, 12, 9, 6, 5, 3])[0],
            phone=f"+{r.choice(['852', '60', '66', '63', '84'])}{r.randint(10_000_000, 99_999_999)}"
            if r.random() < 0.7
            else None,
        )
        self.people.append(person)
        return person

    # ---- rows ----------------------------------------------------------------------------

    def row(
        self,
        person: Person,
        partner: int,
        country: str,
        *,
        assistance: str | None = None,
        given: str | None = None,
        family: str | None = None,
        id_type: str | None = None,
        id_number: str | None = None,
        vulnerable: bool | None = None,
        account: str | None = None,
    ) -> Row:
        r = self.random
        self.refs[partner] += 1
        if assistance is None:
            assistance = r.choices(["cash_relief", *IN_KIND], [70, 12, 8, 5, 5])[0]
        if vulnerable is None:
            vulnerable = r.random() < 0.9
        vulnerabilities = ";".join(r.sample(VULNERABILITIES, r.randint(1, 3))) if vulnerable else ""
        method = account_value = ""
        if assistance == "cash_relief":
            method = r.choices(["bank_transfer", "e_wallet", "cash_pickup"], [45, 40, 15])[0]
            if account is not None:
                method = "bank_transfer"
                account_value = account
            elif method != "cash_pickup":
                account_value = f"{'BK' if method == 'bank_transfer' else 'EW'}{r.randint(10**9, 10**10 - 1)}"
        registered = REGISTRATION_START + timedelta(days=r.randint(0, REGISTRATION_DAYS - 1))
        values = {
            "partner_ref": f"P{partner}-{self.refs[partner]:06d}",
            "given_name": given if given is not None else person.given,
            "family_name": family if family is not None else person.family,
            "sex": person.sex,
            "date_of_birth": person.dob.isoformat(),
            "nationality": person.nationality,
            "country": country,
            "id_type": id_type if id_type is not None else person.id_type,
            "id_number": id_number if id_number is not None else person.id_number,
            "phone": person.phone or "",
            "household_size": str(person.household_size),
            "vulnerabilities": vulnerabilities,
            "consent": "yes",
            "assistance": assistance,
            "payout_method": method,
            "payout_account": account_value,
            "registered_on": registered.isoformat(),
        }
        return Row(person, partner, values)

    def invalid_row(self, partner: int, country: str, nationality: str) -> Row:
        person = self.new_person(nationality)
        self.people.pop()  # never registered: it does not exist for the programme
        row = self.row(person, partner, country, assistance="cash_relief")
        row.valid = False
        kind = self.random.randrange(6)
        if kind == 0:
            row.values["date_of_birth"] = "1990-02-30"
        elif kind == 1 and person.family:
            row.values["nationality"] = "Vietnam"
        elif kind == 2:
            row.values["household_size"] = "0"
        elif kind == 3:
            row.values["consent"] = "no"
        elif kind == 4:
            row.values["payout_method"] = "bank_transfer"
            row.values["payout_account"] = ""
        else:
            row.values["sex"] = "female"
        return row


def generate_programme(persons: int = 2000, seed: int = 7, partners: int | None = None) -> Programme:
    """A programme of about `persons` distinct people (as the identity rules define people)."""
    builder = _Builder(persons, seed)
    r = builder.random
    chosen = PARTNERS[: partners or len(PARTNERS)]
    # Two rounds of batches: every partner submits once, then again. Duplicates of a person always
    # sit in a later batch than the person's first row.
    rounds = 2
    batches = [Batch(p % len(chosen), chosen[p % len(chosen)][0]) for p in range(len(chosen) * rounds)]
    first_round = len(chosen)
    registered: list[tuple[Person, int, str]] = []  # (person, batch index, country) of first rows

    def place(batch_index: int, row: Row) -> None:
        batches[batch_index].rows.append(row)

    # First rows: every person once, spread over all batches.
    for _ in range(persons):
        batch_index = r.randrange(len(batches))
        partner = batches[batch_index].partner
        _, countries, nationalities = chosen[partner]
        country = r.choice(countries)
        person = builder.new_person(r.choice(nationalities), minor=r.random() < 0.03)
        account = f"FAIL-{r.randint(1000, 9999)}" if r.random() < 0.01 else None
        place(
            batch_index,
            builder.row(
                person, partner, country, assistance="cash_relief" if account else None, account=account
            ),
        )
        registered.append((person, batch_index, country))

    single_row = {person.index for person, *_ in registered}

    def later_batch(after: int, other_partner_than: int | None = None) -> int | None:
        options = [
            i
            for i in range(after + 1, len(batches))
            if other_partner_than is None or batches[i].partner != other_partner_than
        ]
        return r.choice(options) if options else None

    failing_accounts = {
        row.person.index
        for batch in batches
        for row in batch.rows
        if row.values["payout_account"].startswith("FAIL-")
    }

    def has_fail_account(person: Person) -> bool:
        return person.index in failing_accounts

    candidates = [
        entry
        for entry in registered
        if entry[1] < first_round + len(chosen) - 1 and not has_fail_account(entry[0])
    ]
    r.shuffle(candidates)
    budget = max(1, persons // 10)
    for person, batch_index, _country in candidates[:budget]:
        target = later_batch(batch_index, other_partner_than=batches[batch_index].partner)
        if target is None:
            continue
        partner = batches[target].partner
        target_country = r.choice(chosen[partner][1])
        kind = r.randrange(4)
        single_row.discard(person.index)
        if kind == 0 and person.id_type != "none":
            # Rule 1: the same document written differently, another spelling of the name.
            number = person.id_number
            written = f"{number[:2]} {number[2:5]}-{number[5:]}".lower()
            place(
                target,
                builder.row(
                    person,
                    partner,
                    target_country,
                    id_number=written,
                    given=_strip_marks(person.given).upper(),
                ),
            )
        elif kind == 1 and person.family:
            # Rule 2: same name (marks dropped, tokens reordered) and birth date, another document.
            id_type, id_number = builder._document(person.nationality)
            place(
                target,
                builder.row(
                    person,
                    partner,
                    target_country,
                    given=_strip_marks(person.family),
                    family=_strip_marks(person.given),
                    id_type=id_type,
                    id_number=id_number,
                ),
            )
        elif kind == 2:
            # In-kind help from another partner for someone already registered.
            place(target, builder.row(person, partner, target_country, assistance=r.choice(IN_KIND)))
        else:
            # Transitive: a work permit with the same name, then that work permit with another spelling.
            permit = builder._document(person.nationality)[1] or f"W{r.randint(10**6, 10**7)}"
            place(
                target, builder.row(person, partner, target_country, id_type="work_permit", id_number=permit)
            )
            third = later_batch(target)
            if third is not None and builder.claim_name(
                person.nationality, person.dob, person.given + "h", person.family
            ):
                p3 = batches[third].partner
                place(
                    third,
                    builder.row(
                        person,
                        p3,
                        r.choice(chosen[p3][1]),
                        id_type="work_permit",
                        id_number=permit,
                        given=person.given + "h",
                    ),
                )

    # Near misses: different people whose names are one edit apart, same birth date and nationality.
    for person, _batch_index, country in registered[: max(1, persons // 100)]:
        if not builder.claim_name(person.nationality, person.dob, person.given, person.family + "a"):
            continue
        twin = builder.new_person(person.nationality)
        twin.dob, twin.given, twin.family = person.dob, person.given, person.family + "a"
        target = r.randrange(len(batches))
        partner = batches[target].partner
        place(target, builder.row(twin, partner, r.choice(chosen[partner][1])))
        registered.append((twin, target, country))

    # Late links: two people registered apart (each paid), then one row carries the first one's
    # document with the second one's name and birth date, so the two are one person after all.
    early = [
        entry
        for entry in registered
        if entry[1] < first_round and entry[0].id_type != "none" and not has_fail_account(entry[0])
    ]
    by_nationality: dict[str, list[tuple[Person, int, str]]] = defaultdict(list)
    for entry in early:
        by_nationality[entry[0].nationality].append(entry)
    links = 0
    rows_by_person: dict[int, list[Row]] = defaultdict(list)
    for batch in batches:
        for row in batch.rows:
            rows_by_person[row.person.index].append(row)
    for group in by_nationality.values():
        while len(group) >= 2 and links < max(1, persons // 200):
            (a, a_batch, _), (b, b_batch, _) = group.pop(), group.pop()
            b.sex = a.sex
            for row in rows_by_person[b.index]:
                row.values["sex"] = a.sex
            target = later_batch(max(a_batch, b_batch))
            if target is None:
                continue
            partner = batches[target].partner
            place(
                target,
                builder.row(
                    b,
                    partner,
                    r.choice(chosen[partner][1]),
                    id_type=a.id_type,
                    id_number=a.id_number,
                    assistance=r.choice(IN_KIND),
                ),
            )
            links += 1

    # Invalid rows: a few per batch.
    for batch in batches:
        _, countries, nationalities = chosen[batch.partner]
        for _ in range(max(1, len(batch.rows) // 200)):
            batch.rows.insert(
                r.randrange(len(batch.rows) + 1),
                builder.invalid_row(batch.partner, r.choice(countries), r.choice(nationalities)),
            )

    batches = [batch for batch in batches if batch.rows]
    return Programme([name for name, *_ in chosen], batches, reference_reach(batches))


# ---- the oracle ------------------------------------------------------------------------------


def reference_reach(batches: list[Batch]) -> dict[str, Any]:
    """Apply SPEC §4–§6 to the valid rows in submission order; return the expected reach report."""
    parent: dict[int, int] = {}

    def find(node: int) -> int:
        while parent.setdefault(node, node) != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    keys: dict[tuple[str, ...], int] = {}
    approved: dict[int, set[str]] = defaultdict(set)  # person root → assistance types approved
    rows: list[dict[str, Any]] = []
    duplicates = 0
    for batch in batches:
        decided: list[dict[str, Any]] = []
        for row in batch.rows:
            if not row.valid:
                continue
            v = row.values
            row_id = len(rows) + len(decided)
            dob = date.fromisoformat(v["date_of_birth"])
            registered = date.fromisoformat(v["registered_on"])
            own_keys = [
                (
                    "name",
                    v["nationality"],
                    v["date_of_birth"],
                    normalise_name(v["given_name"], v["family_name"]),
                )
            ]
            if v["id_type"] != "none":
                own_keys.append(
                    ("doc", v["nationality"], v["id_type"], normalise_document_number(v["id_number"]))
                )
            decided.append(
                {
                    "row_id": row_id,
                    "keys": own_keys,
                    "values": v,
                    "age": age_on(dob, registered),
                    "partner": batch.partner_name,
                }
            )
        # Identity first (a batch never holds two rows of one person), then decisions.
        for item in decided:
            find(item["row_id"])
            for key in item["keys"]:
                if key in keys:
                    a, b = find(keys[key]), find(item["row_id"])
                    if a != b:
                        parent[max(a, b)] = min(a, b)
                        approved[min(a, b)] |= approved.pop(max(a, b), set())
                else:
                    keys[key] = item["row_id"]
        for item in decided:
            v = item["values"]
            person = find(item["row_id"])
            assistance = v["assistance"]
            already = assistance in approved[person]
            # A row of a person already approved for this help is a duplicate registration,
            # whatever else it fails (the other reasons are listed with it).
            failing = assistance == "cash_relief" and (item["age"] < 18 or not v["vulnerabilities"])
            item["decision"] = "duplicate" if already else "ineligible" if failing else "eligible"
            if item["decision"] == "duplicate":
                duplicates += 1
            if item["decision"] == "eligible":
                approved[person].add(assistance)
            rows.append(item)

    persons: dict[int, list[dict[str, Any]]] = defaultdict(list)
    disbursed: dict[str, dict[str, int]] = {}
    for item in rows:
        if item["decision"] != "eligible":
            continue
        v = item["values"]
        if v["assistance"] == "cash_relief":
            if v["payout_account"].startswith("FAIL-"):
                continue
            base, top_up = TRANSFER_TABLE[v["country"]]
            money = transfer_amount(COUNTRY_CURRENCIES[v["country"]], base, top_up, int(v["household_size"]))
            entry = disbursed.setdefault(money.currency, {"amount_minor": 0, "payments": 0})
            entry["amount_minor"] += money.amount_minor
            entry["payments"] += 1
        persons[find(item["row_id"])].append(item)

    def band(age: int) -> str:
        return (
            "0-17"
            if age < 18
            else "18-29"
            if age < 30
            else "30-44"
            if age < 45
            else "45-59"
            if age < 60
            else "60+"
        )

    breakdowns: dict[str, dict[str, int]] = {
        name: defaultdict(int)
        for name in ("by_country", "by_sex", "by_age_band", "by_partner", "by_assistance")
    }
    people = 0
    for delivered in persons.values():
        people += max(int(item["values"]["household_size"]) for item in delivered)
        first = min(delivered, key=lambda item: (item["values"]["registered_on"], item["row_id"]))
        breakdowns["by_age_band"][band(first["age"])] += 1
        breakdowns["by_sex"][first["values"]["sex"]] += 1
        for name, field_name in (("by_country", "country"), ("by_assistance", "assistance")):
            for group in {item["values"][field_name] for item in delivered}:
                breakdowns[name][group] += 1
        for group in {item["partner"] for item in delivered}:
            breakdowns["by_partner"][group] += 1
    return {
        "beneficiaries_reached": len(persons),
        "people_reached": people,
        **{name: dict(sorted(groups.items())) for name, groups in breakdowns.items()},
        "disbursed": dict(sorted(disbursed.items())),
        "duplicates_detected": duplicates,
        "accepted": sum(batch.accepted for batch in batches),
        "rejected": sum(batch.rejected for batch in batches),
    }
