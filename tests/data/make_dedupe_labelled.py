"""Generate ``dedupe_labelled.csv``: a seeded lead list with known duplicates and known traps.

Run ``python tests/data/make_dedupe_labelled.py`` to re-make the file next to this script; the
same seed always gives the same rows. ``cluster_id`` is the truth (rows with one id are one
person); ``kind`` says which case a row belongs to. Distinct people are drawn so that no two at
one company have similar names (folded ratio below 0.8) and no two share an email or a phone,
except where a trap shares one on purpose.
"""

from __future__ import annotations

import csv
import random
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from rapidfuzz import fuzz

SEED = 20240611
OUTPUT = Path(__file__).with_name("dedupe_labelled.csv")
COLUMNS = [
    "cluster_id",
    "kind",
    "email",
    "phone",
    "country",
    "first_name",
    "last_name",
    "company",
    "company_domain",
]

FIRST_NAMES = [
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Amelia",
    "Oliver",
    "Sophia",
    "Elijah",
    "Charlotte",
    "Lucas",
    "Mia",
    "Mateo",
    "Harper",
    "Henry",
    "Evelyn",
    "Theodore",
    "Isabella",
    "Benjamin",
    "Aurora",
    "Sebastian",
    "Eleanor",
    "Jack",
    "Hazel",
    "Levi",
    "Violet",
    "Owen",
    "Nora",
    "Asher",
    "Ivy",
    "Ezra",
    "Stella",
    "Hudson",
    "Naomi",
    "Caleb",
    "Lucy",
    "Adrian",
    "Claire",
    "Gabriel",
    "Ruby",
    "Julian",
    "Sadie",
    "Miles",
    "Alice",
    "Isaac",
    "Madeline",
    "Leonard",
    "Valentina",
    "Xavier",
    "Ingrid",
    "Tobias",
    "Greta",
    "Magnus",
    "Astrid",
    "Florian",
    "Margot",
    "Anouk",
    "Dieter",
    "Priya",
    "Arjun",
    "Keiko",
    "Hiroshi",
    "Fatima",
    "Omar",
    "Chiara",
    "Matteo",
    "Siobhan",
    "Declan",
    "Aleksandra",
    "Piotr",
    "Yara",
    "Tariq",
]
ACCENTED_FIRST = ["José", "Zoë", "Björn", "Agnès", "Renée", "Jürgen", "Inés", "Andrés", "Ümit"]
LAST_NAMES = [
    "Anderson",
    "Bennett",
    "Carrington",
    "Donovan",
    "Ellison",
    "Fairbanks",
    "Gallagher",
    "Hargreaves",
    "Ingram",
    "Jefferson",
    "Kowalski",
    "Lindqvist",
    "Montgomery",
    "Nakamura",
    "Oyelaran",
    "Pemberton",
    "Quintero",
    "Rasmussen",
    "Sorensen",
    "Thackeray",
    "Underwood",
    "Vasquez",
    "Whitfield",
    "Yamamoto",
    "Zimmermann",
    "Abernathy",
    "Blackwood",
    "Castellano",
    "Delacroix",
    "Eastwood",
    "Fitzgerald",
    "Goldberg",
    "Halvorsen",
    "Iglesias",
    "Jankowski",
    "Kirkpatrick",
    "Lombardi",
    "Mendelsohn",
    "Novak",
    "Ostrowski",
    "Patterson",
    "Richter",
    "Schneider",
    "Takahashi",
    "Valdivia",
    "Wainwright",
    "Achterberg",
    "Brennan",
    "Cheng",
    "Dubois",
    "Esposito",
    "Ferreira",
    "Grünewald",
    "Hoffmann",
    "Ivanova",
    "Johansson",
    "Kaminski",
    "Larsen",
    "Moreau",
    "Nieminen",
    "Oliveira",
    "Petrov",
    "Rossi",
    "Santoro",
    "Tanaka",
    "Urquhart",
    "Vogel",
    "Weber",
    "Yilmaz",
    "Zielinski",
    "Baptiste",
    "Caldwell",
    "Drummond",
    "Everhart",
    "Forsythe",
    "Gustafsson",
    "Holloway",
    "Ivers",
    "Jablonski",
    "Kessler",
    "Lachance",
    "MacAllister",
    "Northcott",
    "Ortega",
    "Prescott",
    "Quinlan",
    "Rutherford",
    "Sinclair",
    "Templeton",
    "Vandermeer",
    "Whitmore",
    "Ashworth",
    "Beaumont",
    "Cavendish",
]
ACCENTED_LAST = ["Núñez", "Müller", "Lefèvre", "Gonçalves", "Kovačević", "Ångström", "Dvořák"]
COMPANY_WORDS = [
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "vandelay",
    "soylent",
    "wonka",
    "stark",
    "wayne",
    "tyrell",
    "cyberdyne",
    "aperture",
    "massive",
    "oscorp",
    "pied",
    "nakatomi",
    "virtucon",
    "gringotts",
    "monarch",
    "dunder",
    "axiom",
    "zenith",
    "nimbus",
    "quantum",
    "lumen",
    "vertex",
    "orbit",
    "helix",
    "cobalt",
    "ember",
    "fathom",
    "granite",
    "harbor",
    "juniper",
    "kestrel",
    "lattice",
    "meridian",
    "nova",
]
TLDS = ["io", "com", "de", "co.uk", "net", "ai"]
FREE_DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "gmx.de"]


def fold(value: str) -> str:
    """Case and accents folded, as a comparison key."""
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def ascii_local(value: str) -> str:
    """A name as it would appear in an email local part."""
    return "".join(c for c in fold(value) if c.isalnum())


@dataclass
class Person:
    """One real person with a home country, a phone and (maybe) an employer."""

    first: str
    last: str
    country: str
    phone: str  # digits without country code, formatted per country by ``phone_as``
    company: str | None
    domain: str | None


class Generator:
    """Draws people and rows; keeps the registries that keep distinct people distinct."""

    def __init__(self, seed: int = SEED) -> None:
        self.rng = random.Random(seed)
        self.rows: list[dict[str, str]] = []
        self.next_id = 0
        self.emails: set[str] = set()
        self.phones: set[tuple[str, str]] = set()
        self.names_at: dict[str, list[str]] = {}
        self.companies = self._companies(30)

    def _companies(self, count: int) -> list[tuple[str, str]]:
        words = self.rng.sample(COMPANY_WORDS, count)
        return [
            (
                w.capitalize() + " " + self.rng.choice(["Inc", "GmbH", "Ltd", "Labs"]),
                f"{w}{self.rng.choice(['', 'hq', 'corp'])}.{self.rng.choice(TLDS)}",
            )
            for w in words
        ]

    # ------------------------------------------------------------------ drawing people

    def new_id(self) -> str:
        self.next_id += 1
        return f"p{self.next_id:04d}"

    def draw_phone(self, country: str) -> str:
        while True:
            if country == "US":
                number = (
                    f"{self.rng.randint(201, 989)}{self.rng.randint(200, 999)}"
                    f"{self.rng.randint(0, 9999):04d}"
                )
            elif country == "GB":
                number = f"20{self.rng.randint(70000000, 89999999)}"
            else:
                number = f"30{self.rng.randint(2000000, 9999999)}"
            if (country, number) not in self.phones:
                self.phones.add((country, number))
                return number

    def phone_as(self, person: Person, style: int) -> tuple[str, str]:
        """The person's phone written one of several ways, with the country cell to go with it."""
        n, country = person.phone, person.country
        if country == "US":
            styles = [
                (f"+1 {n[:3]} {n[3:6]} {n[6:]}", ""),
                (f"({n[:3]}) {n[3:6]}-{n[6:]}", "US"),
                (f"{n[:3]}.{n[3:6]}.{n[6:]}", "United States"),
                (f"+1-{n[:3]}-{n[3:6]}-{n[6:]}", "USA"),
            ]
        elif country == "GB":
            styles = [
                (f"+44 {n[:2]} {n[2:6]} {n[6:]}", ""),
                (f"0{n[:2]} {n[2:6]} {n[6:]}", "GB"),
                (f"+44 (0){n[:2]} {n[2:6]} {n[6:]}", "United Kingdom"),
                (f"0044 {n}", ""),
            ]
        else:
            styles = [
                (f"+49 {n[:2]} {n[2:]}", ""),
                (f"0{n[:2]} {n[2:]}", "DE"),
                (f"0{n[:2]}/{n[2:]}", "Germany"),
                (f"+49 ({n[:2]}) {n[2:]}", ""),
            ]
        return styles[style % len(styles)]

    def name_free(self, domain: str | None, first: str, last: str) -> bool:
        if domain is None:
            return True
        key = fold(f"{first} {last}")
        return all(fuzz.ratio(key, other) < 80 for other in self.names_at.get(domain, []))

    def draw_person(
        self,
        *,
        company: tuple[str, str] | bool | None = True,
        first: str | None = None,
        last: str | None = None,
        country: str | None = None,
    ) -> Person:
        """A person distinct from every other drawn (names at their company, phone)."""
        random_company = company is True
        for _ in range(1000):
            if random_company:
                company = self.rng.choice(self.companies)
            f = first or self.rng.choice(FIRST_NAMES)
            la = last or self.rng.choice(LAST_NAMES)
            domain = company[1] if isinstance(company, tuple) else None
            if self.name_free(domain, f, la):
                break
        else:
            raise RuntimeError("no free name left at " + str(company))
        if domain is not None:
            self.names_at.setdefault(domain, []).append(fold(f"{f} {la}"))
        c = country or self.rng.choices(["US", "GB", "DE"], weights=[5, 3, 2])[0]
        return Person(
            first=f,
            last=la,
            country=c,
            phone=self.draw_phone(c),
            company=company[0] if isinstance(company, tuple) else None,
            domain=domain,
        )

    def claim(self, email: str) -> bool:
        """Reserve an email identity; False when another person already has it."""
        key = email.strip().lower()
        local, _, domain = key.partition("@")
        if domain in ("gmail.com", "googlemail.com"):
            key = local.split("+")[0].replace(".", "") + "@gmail.com"
        if key in self.emails:
            return False
        self.emails.add(key)
        return True

    def work_email(self, person: Person, pattern: int) -> str | None:
        f, la = ascii_local(person.first), ascii_local(person.last)
        local = [f"{f}.{la}", f"{f[0]}{la}", f"{f}", f"{f}_{la}", f"{la}.{f}"][pattern % 5]
        email = f"{local}@{person.domain}"
        return email if self.claim(email) else None

    def work_email_from(self, person: Person, pattern: int) -> str | None:
        """The first free work address trying the patterns from ``pattern`` on."""
        for step in range(5):
            email = self.work_email(person, pattern + step)
            if email is not None:
                return email
        return None

    def free_email(self, person: Person, domain: str | None = None) -> str:
        f, la = ascii_local(person.first), ascii_local(person.last)
        domain = domain or self.rng.choice(FREE_DOMAINS)
        while True:
            email = f"{f}.{la}{self.rng.randint(1, 999)}@{domain}"
            if self.claim(email):
                return email

    def any_email(self, person: Person) -> str:
        email = self.work_email_from(person, 0) if person.domain is not None else None
        return email or self.free_email(person)

    # ------------------------------------------------------------------ rows

    def row(
        self,
        cluster: str,
        kind: str,
        person: Person,
        *,
        email: str | None = "",
        phone_style: int | None = 0,
        first: str | None = None,
        last: str | None = None,
        domain_column: bool = False,
    ) -> None:
        phone, country = ("", "")
        if phone_style is not None:
            phone, country = self.phone_as(person, phone_style)
        if not country and self.rng.random() < 0.5:
            country = person.country
        self.rows.append(
            {
                "cluster_id": cluster,
                "kind": kind,
                "email": email or "",
                "phone": phone,
                "country": country,
                "first_name": person.first if first is None else first,
                "last_name": person.last if last is None else last,
                "company": person.company or "",
                "company_domain": (person.domain or "") if domain_column else "",
            }
        )

    def typo(self, word: str) -> str:
        """One keyboard slip: a swapped, doubled, dropped or replaced letter (not the first)."""
        i = self.rng.randint(1, len(word) - 2)
        op = self.rng.choice(["swap", "double", "drop", "replace"])
        if op == "swap":
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        if op == "double":
            return word[: i + 1] + word[i] + word[i + 1 :]
        if op == "drop":
            return word[:i] + word[i + 1 :]
        letter = self.rng.choice([c for c in "aeioulnrst" if c != word[i]])
        return word[:i] + letter + word[i + 1 :]

    # ------------------------------------------------------------------ cases

    def singletons(self, count: int) -> None:
        for _ in range(count):
            person = self.draw_person(company=self.rng.random() < 0.8 or None)
            self.row(
                self.new_id(),
                "single",
                person,
                email=self.any_email(person),
                phone_style=self.rng.choice([0, 1, 2, None]),
            )

    def dup_email_case(self, count: int) -> None:
        for _ in range(count):
            person = self.draw_person()
            email = self.any_email(person)
            cid = self.new_id()
            messy = f"  {email.title()} "
            self.row(cid, "dup:email_case", person, email=email)
            self.row(cid, "dup:email_case", person, email=messy, phone_style=None)

    def dup_gmail(self, count: int) -> None:
        for _ in range(count):
            person = self.draw_person(company=None)
            f, la = ascii_local(person.first), ascii_local(person.last)
            base = f"{f}{la}{self.rng.randint(1, 99)}"
            if not self.claim(f"{base}@gmail.com"):
                continue
            cid = self.new_id()
            self.row(cid, "dup:gmail", person, email=f"{base}@gmail.com")
            dotted = f"{base[: len(f)]}.{base[len(f) :]}"
            self.row(
                cid,
                "dup:gmail",
                person,
                email=f"{dotted.title()}+newsletter@gmail.com",
                phone_style=None,
            )
            if self.rng.random() < 0.5:
                self.row(
                    cid, "dup:googlemail", person, email=f"{base}@googlemail.com", phone_style=2
                )

    def dup_phone(self, count: int) -> None:
        for n in range(count):
            person = self.draw_person()
            cid = self.new_id()
            self.row(cid, "dup:phone_last", person, email=self.any_email(person), phone_style=0)
            first = [person.first, "", person.first.upper()][n % 3]
            self.row(
                cid,
                "dup:phone_last",
                person,
                email=self.free_email(person),
                phone_style=1 + n % 3,
                first=first,
            )

    def dup_nickname_phone(self) -> None:
        pairs = [("Robert", "Bob"), ("William", "Bill"), ("Katherine", "Kate"), ("Michael", "Mike")]
        for full, short in pairs:
            person = self.draw_person(first=full)
            cid = self.new_id()
            self.row(cid, "dup:phone_nickname", person, email=self.any_email(person))
            self.row(
                cid,
                "dup:phone_nickname",
                person,
                email=self.free_email(person),
                phone_style=1,
                first=short,
            )

    def dup_name_typo(self, count: int) -> None:
        for n in range(count):
            person = self.draw_person()
            cid = self.new_id()
            email = self.work_email_from(person, 0)
            alias = self.work_email_from(person, 1)
            self.row(cid, "dup:name_typo", person, email=email)
            last = self.typo(person.last) if n % 3 else person.last
            first = self.typo(person.first) if n % 3 == 0 else person.first
            if n % 2 and alias is not None:
                self.row(
                    cid,
                    "dup:name_typo",
                    person,
                    email=alias,
                    phone_style=None,
                    first=first,
                    last=last,
                )
            else:
                self.row(
                    cid,
                    "dup:name_typo",
                    person,
                    email=None,
                    phone_style=None,
                    first=first,
                    last=last,
                    domain_column=True,
                )

    def dup_nickname_domain(self) -> None:
        pairs = [
            ("Robert", "Bob"),
            ("Elizabeth", "Liz"),
            ("Thomas", "Tom"),
            ("Daniel", "Dan"),
            ("Jennifer", "Jen"),
            ("Anthony", "Tony"),
            ("Alexander", "Alex"),
        ]
        for full, short in pairs:
            person = self.draw_person(first=full)
            cid = self.new_id()
            self.row(cid, "dup:nickname_domain", person, email=self.work_email_from(person, 0))
            self.row(
                cid,
                "dup:nickname_domain",
                person,
                email=self.work_email_from(person, 2),
                phone_style=None,
                first=short,
            )

    def dup_accents(self) -> None:
        for first, last in zip(ACCENTED_FIRST, ACCENTED_LAST * 2, strict=False):
            person = self.draw_person(first=first, last=last)
            cid = self.new_id()
            self.row(cid, "dup:accents", person, email=self.work_email_from(person, 0))
            self.row(
                cid,
                "dup:accents",
                person,
                email=self.work_email_from(person, 1),
                phone_style=None,
                first=fold(first).title(),
                last=fold(last).title(),
            )

    def dup_transitive(self, count: int) -> None:
        for _ in range(count):
            person = self.draw_person()
            cid = self.new_id()
            work = self.any_email(person)
            self.row(cid, "dup:transitive", person, email=work, phone_style=None)
            self.row(cid, "dup:transitive", person, email=work.upper(), phone_style=0)
            self.row(
                cid,
                "dup:transitive",
                person,
                email=self.free_email(person),
                phone_style=3,
                first="",
            )

    def trap_colleagues(self, count: int) -> None:
        for _ in range(count):
            a = self.draw_person()
            b = self.draw_person(company=(a.company or "", a.domain or ""))
            for p in (a, b):
                self.row(self.new_id(), "trap:colleagues", p, email=self.any_email(p))

    def trap_switchboard(self, count: int) -> None:
        for _ in range(count):
            a = self.draw_person()
            for i in range(3):
                p = a if i == 0 else self.draw_person(company=(a.company or "", a.domain or ""))
                p.phone, p.country = a.phone, a.country
                self.row(
                    self.new_id(), "trap:switchboard", p, email=self.any_email(p), phone_style=i
                )

    def trap_role_addresses(self, count: int) -> None:
        for company, domain in self.rng.sample(self.companies, count):
            office = self.draw_person(company=(company, domain))
            for i, role in enumerate(["info", "sales", "contact"]):
                if not self.claim(f"{role}@{domain}"):
                    continue
                first, last = ("Sales", "Team") if i == 1 else ("", "")
                self.row(
                    self.new_id(),
                    "trap:role",
                    office,
                    email=f"{role}@{domain}",
                    phone_style=i,
                    first=first,
                    last=last,
                )

    def trap_gmail_similar(self, count: int) -> None:
        for _ in range(count):
            a = self.draw_person(company=None)
            b = self.draw_person(company=None, first=a.first, last=self.typo(a.last))
            for p in (a, b):
                self.row(
                    self.new_id(), "trap:gmail_similar", p, email=self.free_email(p, "gmail.com")
                )

    def trap_plus_tags(self, count: int) -> None:
        for company, domain in self.rng.sample(self.companies, count):
            office = self.draw_person(company=(company, domain))
            box = self.rng.choice(["ops", "events", "leads", "crm"])
            for tag in ("eu", "us"):
                email = f"{box}+{tag}@{domain}"
                if self.claim(email):
                    self.row(
                        self.new_id(),
                        "trap:plus_tag",
                        office,
                        email=email,
                        phone_style=None,
                        first="",
                        last="",
                    )

    def trap_same_name_elsewhere(self, count: int) -> None:
        for _ in range(count):
            a = self.draw_person()
            others = [c for c in self.companies if c[1] != a.domain]
            self.rng.shuffle(others)
            elsewhere = next(c for c in others if self.name_free(c[1], a.first, a.last))
            b = self.draw_person(company=elsewhere, first=a.first, last=a.last)
            for p in (a, b):
                self.row(self.new_id(), "trap:same_name_elsewhere", p, email=self.any_email(p))

    def trap_household(self, count: int) -> None:
        for _ in range(count):
            a = self.draw_person(company=None)
            first_b = self.rng.choice(
                [f for f in FIRST_NAMES if f[0] != a.first[0] and abs(len(f) - len(a.first)) < 3]
            )
            b = self.draw_person(company=None, first=first_b, last=a.last)
            b.phone, b.country = a.phone, a.country
            for i, p in enumerate((a, b)):
                self.row(
                    self.new_id(), "trap:household", p, email=self.free_email(p), phone_style=i
                )

    def dup_initial(self, count: int) -> None:
        """A first name cut to its initial at the same company: rule 3 does not guess these."""
        for _ in range(count):
            person = self.draw_person()
            cid = self.new_id()
            self.row(cid, "dup:initial", person, email=self.work_email_from(person, 0))
            self.row(
                cid,
                "dup:initial",
                person,
                email=None,
                phone_style=None,
                first=person.first[0] + ".",
                domain_column=True,
            )

    def trap_gendered(self) -> None:
        """Daniel and Daniela at one company; Mario and Maria at one home number."""
        for male, female in [("Daniel", "Daniela"), ("Paul", "Paula"), ("Julian", "Juliana")]:
            a = self.draw_person(first=male)
            company = (a.company or "", a.domain or "")
            # drawn next to a on purpose: the names are one letter apart
            b = self.draw_person(company=None, first=female, last=a.last)
            b.company, b.domain = company
            for p in (a, b):
                self.row(self.new_id(), "trap:gendered_colleagues", p, email=self.any_email(p))
        for male, female in [("Mario", "Maria"), ("Simon", "Simona")]:
            a = self.draw_person(company=None, first=male)
            b = self.draw_person(company=None, first=female, last=a.last)
            b.phone, b.country = a.phone, a.country
            for i, p in enumerate((a, b)):
                self.row(
                    self.new_id(),
                    "trap:gendered_household",
                    p,
                    email=self.free_email(p),
                    phone_style=i,
                )

    def generate(self) -> list[dict[str, str]]:
        self.singletons(240)
        self.dup_email_case(20)
        self.dup_gmail(15)
        self.dup_phone(15)
        self.dup_nickname_phone()
        self.dup_name_typo(24)
        self.dup_nickname_domain()
        self.dup_accents()
        self.dup_transitive(6)
        self.trap_colleagues(10)
        self.trap_switchboard(8)
        self.trap_role_addresses(6)
        self.trap_gmail_similar(8)
        self.trap_plus_tags(6)
        self.trap_same_name_elsewhere(10)
        self.trap_household(8)
        self.dup_initial(3)
        self.trap_gendered()
        self.rng.shuffle(self.rows)
        return self.rows


def generate(seed: int = SEED) -> list[dict[str, str]]:
    """The labelled rows for ``seed``, shuffled."""
    return Generator(seed).generate()


def write(path: Path = OUTPUT, seed: int = SEED) -> int:
    """Write the labelled CSV; returns the number of rows."""
    rows = generate(seed)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


if __name__ == "__main__":
    print(f"wrote {write()} rows to {OUTPUT.name}")
