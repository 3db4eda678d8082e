"""Realistic, seeded app conversion events shaped like schemas/conversion_event.avsc.

Used by `capi-stream bench normalize`, the demo and the end-to-end benchmark. People are drawn from a
pool (default: one person per 4 events: install, registration, trial, purchase...), so their values
repeat across events as in a real stream. Phones, names, cities, states and postal codes come in the
national formats of 16 countries, with the usual mess (case, spaces, accents, apostrophes, full-width
characters, ZIP+4, dates in several forms). Same `seed` and `now`, same events.
"""

from __future__ import annotations

import datetime
import random
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import phonenumbers

from stream.avro.schema import load_schema

DEFAULT_APP_IDS: Final = ("com.example.shop", "com.example.game", "com.example.fitness")
# (weight, event_name): installs and purchases dominate app conversion traffic.
EVENT_MIX: Final = (
    (25, "MobileAppInstall"), (15, "CompleteRegistration"), (10, "StartTrial"), (10, "Subscribe"),
    (25, "Purchase"), (5, "AddToCart"), (5, "LevelAchieved"), (5, "TutorialCompleted"),
)  # fmt: skip
CURRENCIES: Final = ("USD", "usd", "EUR", "GBP", "BRL", "INR", "JPY", "MXN", "PLN", "KRW")


@dataclass(frozen=True, slots=True)
class _Country:
    code: str
    forms: tuple[str, ...]  # how apps write the country
    first: tuple[str, ...]
    last: tuple[str, ...]
    cities: tuple[str, ...]
    states: tuple[str, ...]
    zips: tuple[str, ...]
    locale: str
    tz: str


COUNTRIES: Final = (
    _Country("US", ("US", "us", "USA", "United States", "U.S."), ("Mary", "JOHN", "José", "Zoë", "Mary-Jane"),
             ("Smith", "O'Brien", "Smith Jr.", "García"), ("New York", "St. Louis", "Winston-Salem"),
             ("CA", "California", "N.Y.", "tx"), ("94035", "94035-1234", "10001", "02134"), "en_US", "PST"),
    _Country("GB", ("GB", "UK", "United Kingdom", "England"), ("Oliver", "Siobhán", "amelia"),
             ("Smith", "O'Neil", "Fforde-Jones"), ("London", "Manchester"), ("England", "Scotland"),
             ("M1 1AE", "SW1A 2AA", "ec1a1bb"), "en_GB", "GMT"),
    _Country("DE", ("DE", "Germany", "de"), ("Jürgen", "Anna-Lena", "MÜLLER"), ("Müller", "Schäfer", "Groß"),
             ("München", "Köln"), ("Bayern", "Berlin"), ("10115", "80331"), "de_DE", "CET"),
    _Country("FR", ("FR", "France"), ("Valéry", "Anaïs", "Jean-Luc"), ("Lefèvre", "D'Artagnan"),
             ("Paris", "Saint-Étienne"), ("Île-de-France",), ("75001", "42 000"), "fr_FR", "CET"),
    _Country("BR", ("BR", "Brazil", "BRA"), ("João", "Maria"), ("Gonçalves", "da Silva"),
             ("São Paulo", "Rio de Janeiro"), ("SP", "RJ"), ("01310-100", "20040020"), "pt_BR", "BRT"),
    _Country("IN", ("IN", "India"), ("Priya", "Rahul"), ("Sharma", "Iyer"), ("Mumbai", "Bengaluru"),
             ("Maharashtra", "KA"), ("110001", "560 001"), "en_IN", "IST"),
    _Country("JP", ("JP", "Japan"), ("\uff28\uff21\uff32\uff35\uff34\uff2f", "Yui", "翔"), ("Sato", "鈴木"),
             ("Tokyo", "大阪"), ("Tokyo",), ("100-0001", "5300001"), "ja_JP", "JST"),
    _Country("MX", ("MX", "Mexico", "México"), ("José", "Guadalupe"), ("Hernández", "López"),
             ("Ciudad de México", "Guadalajara"), ("CDMX", "Jalisco"), ("06600",), "es_MX", "CST"),
    _Country("ES", ("ES", "Spain"), ("Íñigo", "Lucía"), ("Muñoz", "García-Pérez"), ("Málaga", "A Coruña"),
             ("Andalucía",), ("29001",), "es_ES", "CET"),
    _Country("IT", ("IT", "Italy"), ("Niccolò", "Giulia"), ("D'Angelo", "Rossi"), ("Roma", "Reggio Emilia"),
             ("RM", "Lazio"), ("00184",), "it_IT", "CET"),
    _Country("PL", ("PL", "Poland"), ("Łukasz", "Zofia"), ("Wiśniewski", "Kowalska"), ("Łódź", "Kraków"),
             ("Mazowieckie",), ("00-950", "30-001"), "pl_PL", "CET"),
    _Country("KR", ("KR", "South Korea", "Korea, Republic of"), ("정", "Min-jun"), ("Kim", "박"),
             ("Seoul", "부산"), ("Seoul",), ("03187",), "ko_KR", "KST"),
    _Country("NG", ("NG", "Nigeria"), ("Chukwuemeka", "Aisha"), ("Okafor", "Bello"), ("Lagos", "Abuja"),
             ("Lagos",), ("100001",), "en_NG", "WAT"),
    _Country("ID", ("ID", "Indonesia"), ("Budi", "Siti"), ("Santoso", "Wijaya"), ("Jakarta",), ("DKI Jakarta",),
             ("10110",), "id_ID", "WIB"),
    _Country("CA", ("CA", "Canada"), ("Émilie", "Liam"), ("Tremblay", "O'Connor"), ("Montréal", "Toronto"),
             ("QC", "Ontario"), ("K1A 0B1", "h2x 1y4"), "fr_CA", "EST"),
    _Country("AU", ("AU", "Australia"), ("Charlotte", "Jack"), ("Nguyen", "O'Brien"), ("Sydney", "Perth"),
             ("NSW", "Victoria"), ("2000",), "en_AU", "AEST"),
)  # fmt: skip
_PHONE_FORMATS: Final = ("e164", "international", "national", "dots", "00", "plus_trunk")
_DATE_FORMATS: Final = ("%Y%m%d", "%Y-%m-%d", "%m/%d/%Y", "%d.%m.%Y", "%b %d, %Y")
_ANDROID_MODELS: Final = (("Pixel 8", "14"), ("SM-S918B", "13"), ("Redmi Note 12", "13"))
_IOS_MODELS: Final = (("iPhone15,2", "17.4.1"), ("iPhone14,5", "16.7"), ("iPad13,18", "17.2"))
_ZERO_IDFA: Final = "00000000-0000-0000-0000-000000000000"


def _phone(rng: random.Random, country: _Country) -> str:
    example = phonenumbers.example_number_for_type(country.code, phonenumbers.PhoneNumberType.MOBILE)
    if example is None:  # libphonenumber has a mobile example for each of COUNTRIES
        raise ValueError(f"no example mobile number for {country.code}")
    national = str(example.national_number)
    number = phonenumbers.parse(f"+{example.country_code}{national[:-4]}{rng.randrange(10_000):04d}")
    style = rng.choice(_PHONE_FORMATS)
    fmt = phonenumbers.PhoneNumberFormat
    if style == "e164":
        return phonenumbers.format_number(number, fmt.E164)
    if style == "international":
        return phonenumbers.format_number(number, fmt.INTERNATIONAL)
    if style == "national":
        return phonenumbers.format_number(number, fmt.NATIONAL)
    if style == "dots":
        return phonenumbers.format_number(number, fmt.NATIONAL).replace(" ", ".").replace("-", ".")
    if style == "00":
        return "00" + phonenumbers.format_number(number, fmt.E164)[1:]
    return f"+{number.country_code} (0){number.national_number}"  # "+49 (0)151…" written with the trunk


def _person(rng: random.Random, index: int) -> dict[str, Any]:
    country = rng.choice(COUNTRIES)
    first, last = rng.choice(country.first), rng.choice(country.last)
    ios = rng.random() < 0.45
    tracking = rng.random() < (0.35 if ios else 0.9)
    handle = "".join(ch for ch in f"{first}.{last}".lower() if ch.isascii() and (ch.isalnum() or ch == "."))
    email = rng.choice(
        (
            f"{handle}{index}@example.com",
            f" {handle.title()}{index}@Example.COM ",
            f"{handle}+app{index}@mail.example.org",
        )
    )
    birth = f"{rng.randrange(1950, 2006)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
    model, os_version = rng.choice(_IOS_MODELS if ios else _ANDROID_MODELS)
    return {
        "country": country,
        "first": first,
        "last": last,
        "email": email,
        "ios": ios,
        "tracking": tracking,
        "phone": _phone(rng, country),
        "birth": birth,
        "city": rng.choice(country.cities),
        "state": rng.choice(country.states),
        "zip": rng.choice(country.zips),
        "country_form": rng.choice(country.forms) if rng.random() < 0.85 else None,
        "gender": rng.choice(("m", "F", "Male", "female", None)),
        "date_format": rng.choice(_DATE_FORMATS) if rng.random() < 0.5 else None,  # half know the birth date
        "madid": (str(uuid.UUID(int=rng.getrandbits(128))).upper() if ios else str(uuid.UUID(int=rng.getrandbits(128))))
        if tracking
        else (_ZERO_IDFA if ios else None),
        "anon_id": f"XZ{uuid.UUID(int=rng.getrandbits(128)).hex}",
        "ip": (
            f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            if rng.random() < 0.7
            else f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(65536):x}"
        ),
        "ua": (
            f"Mozilla/5.0 (iPhone; CPU iPhone OS {os_version.replace('.', '_')} like Mac OS X)"
            if ios
            else f"Dalvik/2.1.0 (Linux; U; Android {os_version}; {model} Build/UP1A)"
        ),
        "model": model,
        "os_version": os_version,
        "external_id": f"user-{index:07d}",
    }


def _blank(schema: dict[str, Any]) -> dict[str, Any]:
    """Every key of the record schema set to None, nested required records included (Avro decode shape)."""
    return {
        f["name"]: (_blank(f["type"]) if isinstance(f["type"], dict) and f["type"].get("type") == "record" else None)
        for f in schema["fields"]
    }


def _user_data(rng: random.Random, person: dict[str, Any], name: str, template: dict[str, Any]) -> dict[str, Any]:
    user = dict(template)
    # phones change networks: half of the events come from another address than the person's usual one
    ip = (
        person["ip"]
        if rng.random() < 0.5
        else (f"{rng.randrange(1, 224)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
    )
    user.update(madid=person["madid"], anon_id=person["anon_id"], client_ip_address=ip, client_user_agent=person["ua"])
    if name == "MobileAppInstall":
        return user  # before registration an app knows only device identifiers
    country: _Country = person["country"]
    year, month, day = (int(p) for p in person["birth"].split("-"))
    user.update(
        em=person["email"],
        ph=person["phone"]
        if person["country_form"] or person["phone"].startswith(("+", "00"))
        else phonenumbers.format_number(
            phonenumbers.parse(person["phone"], country.code), phonenumbers.PhoneNumberFormat.E164
        ),
        fn=person["first"],
        ln=person["last"],
        ct=person["city"],
        st=person["state"],
        zp=person["zip"],
        country=person["country_form"],
        ge=person["gender"],
        external_id=person["external_id"],
        db=datetime.date(year, month, day).strftime(person["date_format"]) if person["date_format"] else None,
    )
    return user


def _extinfo(person: dict[str, Any], app_id: str) -> list[str]:
    country: _Country = person["country"]
    return [
        "i2" if person["ios"] else "a2",
        app_id,
        "5.2.1",
        "521",
        person["os_version"],
        person["model"],
        country.locale,
        country.tz,
        "",
        "1170" if person["ios"] else "1080",
        "2532" if person["ios"] else "2400",
        "3.0" if person["ios"] else "2.75",
        "6" if person["ios"] else "8",
        "128",
        "64",
        "",
    ]


def _custom(rng: random.Random, name: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    if name not in ("Purchase", "Subscribe", "StartTrial", "AddToCart", "LevelAchieved"):
        return None
    custom = _blank(
        next(t for t in next(f for f in schema["fields"] if f["name"] == "custom_data")["type"] if isinstance(t, dict))
    )
    if name == "LevelAchieved":
        custom.update(level=str(rng.randrange(1, 80)), success=rng.random() < 0.8)
        return custom
    price = round(rng.uniform(0.99, 99.99), 2)
    quantity = rng.randrange(1, 4)
    sku = f"SKU-{rng.randrange(1000):04d}"
    custom.update(
        value=0.0 if name == "StartTrial" else round(price * quantity, 2),
        currency=rng.choice(CURRENCIES),
        content_ids=[sku],
        content_type="product",
        contents=[
            {
                "id": sku,
                "quantity": quantity,
                "item_price": price,
                "delivery_category": None,
                "title": None,
                "brand": None,
                "category": None,
            }
        ],
        order_id=f"o-{rng.getrandbits(48):012x}" if name == "Purchase" else None,
    )
    return custom


def generate(
    n: int,
    seed: int,
    now: int,
    app_ids: Sequence[str] = DEFAULT_APP_IDS,
    *,
    people: int | None = None,
    duplicate_rate: float = 0.0,
    stale_events: int = 0,
    invalid_purchases: int = 0,
) -> Iterator[dict[str, Any]]:
    """Yield `n` records (dicts with every schema key) with event_time in the 24 h before `now`.

    `people`: size of the person pool (default n // 4). `duplicate_rate`: share of records that repeat
    an earlier record (same event_id). `stale_events`: records older than Meta's 7 days.
    `invalid_purchases`: Purchase records without value. Knob records are spread over the stream.
    """
    rng = random.Random(seed)  # noqa: S311 -- reproducible test data, not secrets
    schema = load_schema()
    user_template = _blank(next(f for f in schema["fields"] if f["name"] == "user_data")["type"])
    pool = [_person(rng, i) for i in range(max(1, people if people is not None else n // 4))]
    names = [name for weight, name in EVENT_MIX for _ in range(weight)]
    specials = dict.fromkeys(rng.sample(range(n), min(n, stale_events)), "stale")
    free = [i for i in range(n) if i not in specials]
    specials.update(dict.fromkeys(rng.sample(free, min(len(free), invalid_purchases)), "invalid"))
    recent: deque[dict[str, Any]] = deque(maxlen=100)
    for i in range(n):
        if recent and rng.random() < duplicate_rate:
            yield dict(rng.choice(recent))
            continue
        person = rng.choice(pool)
        name = "Purchase" if specials.get(i) == "invalid" else rng.choice(names)
        app_id = rng.choice(app_ids)
        record = _blank(schema)
        record.update(
            event_name=name,
            event_id=str(uuid.UUID(int=rng.getrandbits(128))),
            action_source="app",
            event_time=now - rng.randrange(8 * 86400, 9 * 86400)
            if specials.get(i) == "stale"
            else now - rng.randrange(86400),
            app_id=app_id,
            user_data=_user_data(rng, person, name, user_template),
            custom_data=_custom(rng, name, schema),
            app_data={
                **_blank(
                    next(
                        t
                        for t in next(f for f in schema["fields"] if f["name"] == "app_data")["type"]
                        if isinstance(t, dict)
                    )
                ),
                "advertiser_tracking_enabled": person["tracking"],
                "application_tracking_enabled": True,
                "extinfo": _extinfo(person, app_id),
            },
            consent=rng.choices((True, None, False), weights=(93, 5, 2))[0],
        )
        if specials.get(i) == "invalid":
            record["custom_data"]["value"] = None
        recent.append(record)
        yield record
