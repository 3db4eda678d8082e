"""Per-field normalization as a specification: the vectors of contract README §3.3 and our own, per field."""

from __future__ import annotations

import hashlib

import pytest

from stream.contract import fields, phones, places
from stream.contract.userdata import hash_value

YEAR = 2026


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normalized(field: str, value: str, country: str | None = None) -> str | None:
    return fields.field_table(country, YEAR)[field](value)


def hashed(field: str, value: str, country: str | None = None) -> str | None:
    return hash_value(fields.field_table(country, YEAR)[field], value)


# §3.3 rows where Meta's SDK follows Meta's written rules: (row, field, input, normalized, SHA-256).
SDK_AGREEING = [
    (
        1,
        "em",
        "John_Smith@gmail.com",
        "john_smith@gmail.com",
        "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f",
    ),
    (
        2,
        "em",
        "  Foo.Bar+tag@Example.COM  ",
        "foo.bar+tag@example.com",
        "bdda1c477e7a36146e19aa83af7d3b5f40074dc626504ddfa89d7eefdad68e3e",
    ),
    (
        3,
        "em",
        "ÜMLAUT@exämple.de",
        "ümlaut@exämple.de",
        "fd8b5906d925a143b64d7862171c63843d49a69494e3e333fe2897e4838b1e28",
    ),
    (6, "em", "a@b.c", "a@b.c", "d648b243a3e817eaa3309e00e183483f2867baadf522099f0c2121770536b25a"),
    (9, "ph", "+1 (650) 555-1212", "16505551212", "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"),
    (11, "ph", "001-650-555-1212", "16505551212", "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"),
    (12, "ph", "+0016505551212", "16505551212", "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"),
    (13, "ph", "1 650 555 1212", "16505551212", "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"),
    (14, "ph", "0044 20 7946 0958", "442079460958", "35e206e5dec4c89b9e8b71b8c32724a5bb518483ac5a20c6617d738375b3b823"),
    (18, "ph", "+91 98765 43210", "919876543210", "92b5072176e723878b5e06ff3ca61898e4eb74e8c46642a0f2db800b17364ab0"),
    (23, "fn", "Mary", "mary", "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"),
    (24, "fn", "  JOHN  ", "john", "96d9632f363564cc3032521409cf22a852f2032eec099ed5967c0d000cec607a"),
    (25, "fn", "Valéry", "valéry", "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"),
    (26, "fn", "정", "정", "8fa8cd9c440be61d0151429310034083132b35975c4bea67fdd74158eb51db14"),
    (31, "fn", "Straße", "straße", "787f4770613d3824cbc89b6d5da90a123e41b07b90b45ea3738c216b14616140"),
    (33, "ln", "MÜLLER", "müller", "2dbd218072117713f2d5996a726a9b216ed791ffd0783b6ba4ab6d61b8333192"),
    (34, "ct", "New York", "newyork", "350c754ba4d38897693aa077ef43072a859d23f613443133fecbbd90a3512ca5"),
    (35, "ct", "St. Louis", "stlouis", "8ba24bdf99947996f3000259be455de791b06fcc0e802ce05031030df1ee8ea3"),
    (36, "ct", "São Paulo", "sãopaulo", "3eda1428ae1aece064071f8d40f08fe2bc59ffa66c171a163caf15122ec4d7f0"),
    (
        38,
        "ct",
        "Winston-Salem 27101",
        "winstonsalem",
        "9e54909cf7a66751ffbdfb4f79635e6d36de413d76f86c5ef42cb8b697662751",
    ),
    (39, "st", "CA", "ca", "6959097001d10501ac7d54c0bdb8db61420f658f2922cc26e46d536119a31126"),
    (41, "st", "N.Y.", "ny", "1b06e2003f8420d6fa42badd8f77ec0f706b976b7a48b13c567dc5a559681683"),
    (43, "zp", "94035", "94035", "1794327a4d443904421f5ca1f3d72d0a62ba2f0770d80755ec2220fc0efb052e"),
    (44, "zp", "94035-1234", "94035", "1794327a4d443904421f5ca1f3d72d0a62ba2f0770d80755ec2220fc0efb052e"),
    (46, "zp", "M1 1AE", "m11ae", "1dc694c2070e697769fb959b50671d76cafd430d8ca191fbdd0affcaea344ac5"),
    (47, "zp", "K1A 0B1", "k1a0b1", "3e8d74314dc02166b1ea8c7bd8c2357fb3f9898074395b8c57f8799848b4daa1"),
    (48, "zp", "01234", "01234", "c565fe03ca9b6242e01dfddefe9bba3d98b270e19cd02fd85ceaf75e2b25bf12"),
    (51, "country", "US", "us", "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"),
    (52, "country", "U.S.", "us", "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"),
    (55, "country", "GB", "gb", "0b407281768f0e833afef47ed464b6571d01ca4d53c12ce5c51d1462f4ad6677"),
    (56, "db", "19970216", "19970216", "01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c"),
    (59, "ge", "m", "m", "62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a"),
    (60, "ge", "F", "f", "252f10c83610ebca1a059c0bae8255eba2f95be4d1d7bcfa89d7248a82d9f111"),
    (62, "dobd", "1", "01", "938db8c9f82c8cb58d3f3ef4fd250036a48d26a712753d2fde5abd03a85cabf4"),
    (64, "dobm", "2", "02", "a953f09a1b6b6725b81956e9ad0b1eb49e3ad40004c04307ef8af6246a054116"),
    (65, "doby", "1997", "1997", "0985b889a1fe4f4e1fb925061ac6fb2247f10875f5fcbe63eec2ab55ed68970e"),
    (67, "f5first", "Christopher", "chris", "5d7f15f2fce8ddb2dbef5c38be896c238ba7e0a432e396759030a853fa6b1151"),
    (68, "f5last", "Li", "li", "00a9e4255a5b63067b76cbfb9fd67f26bdb91be802d5ffcb177ec1b7a8d4c623"),
    (69, "fi", "Zoë", "z", "594e519ae499312b29433b7dd8a97ff068defcba9755b6d5d00e84c524d67b06"),
]

# §3.3 rows the SDK rejects and so do we (the field is dropped).
SDK_AGREEING_REJECTS = [(5, "em", "not-an-email"), (22, "ph", "12345"), (63, "dobd", "32"), (66, "doby", "97")]

# §3.3 rows marked ⚠: the doc-conformant value (§3.4, §0). (row, field, input, event country, normalized,
# prefix of the SHA-256 from the doc or None).
DOC_CONFORMANT = [
    (10, "ph", "(650)555-1212", "us", "16505551212", "e323ec62"),
    (15, "ph", "+44 020 7946 0958", None, "442079460958", "35e206e5"),
    (16, "ph", "020 7946 0958", "gb", "442079460958", "35e206e5"),
    (17, "ph", "+49 (0)30 123456", None, "4930123456", "ac75546d"),
    (19, "ph", "650.555.1212", "us", "16505551212", "e323ec62"),
    (20, "ph", "+1 650 555 1212 ext 9", None, "16505551212", "e323ec62"),  # extension is not the line
    (27, "fn", "O'Brien", None, "obrien", "b4cb6cb3"),
    (28, "fn", "Mary-Jane", None, "maryjane", "f08f448a"),
    (29, "fn", "Mary  Ann", None, "maryann", None),  # docs silent on inner spaces; smithjr sets the rule
    (30, "fn", "\uff2a\uff2f\uff28\uff2e", None, "john", "96d9632f"),  # full-width JOHN: NFKC first
    (32, "ln", "Smith Jr.", None, "smithjr", "bb519c8f"),
    (37, "ct", "Coeur d'Alene", None, "coeurdalene", None),  # ct: no punctuation
    (40, "st", "California", None, "ca", "69590970"),
    (42, "st", "Île-de-France", "fr", "îledefrance", "7f2f97f2"),  # non-US: letters kept, like São Paulo
    (45, "zp", "940351234", "us", "94035", "1794327a"),
    (49, "zp", "00-950", "pl", "00950", None),
    (50, "zp", "100-0001", "jp", "1000001", None),
    (53, "country", "United States", None, "us", "79adb2a2"),
    (54, "country", "UK", None, "gb", "0b407281"),  # SDK rejects; §0 maps the common alias UK
    (57, "db", "1997-02-16", None, "19970216", "01acdbf6"),
    (58, "db", "2/16/1997", None, "19970216", "01acdbf6"),
    (61, "ge", "Male", None, "m", "62c66a7a"),
]

# ⚠ rows whose doc-conformant outcome is that the value is dropped.
DOC_CONFORMANT_DROPS = [
    (4, "em", "foo bar@x.com"),  # an address with a space is not an address
    (8, "em", "d41d8cd98f00b204e9800998ecf8427e"),  # 32 hex is raw data (§0), and not an email
    (21, "ph", "1-800-FLOWERS"),  # Meta: remove letters; what is left is not a number
]


@pytest.mark.parametrize(("row", "field", "value", "expected", "digest"), SDK_AGREEING)
def test_sdk_agreeing_vectors(row: int, field: str, value: str, expected: str, digest: str) -> None:
    """Every §3.3 vector where the SDK follows Meta's rules gives the SDK's normalized value and hash."""
    assert normalized(field, value) == expected, row
    assert hashed(field, value) == digest, row


@pytest.mark.parametrize(("row", "field", "value"), SDK_AGREEING_REJECTS)
def test_sdk_agreeing_rejects(row: int, field: str, value: str) -> None:
    """Values the SDK refuses are dropped by us too."""
    assert hashed(field, value) is None, row


@pytest.mark.parametrize(("row", "field", "value", "country", "expected", "prefix"), DOC_CONFORMANT)
def test_doc_conformant_vectors(
    row: int, field: str, value: str, country: str | None, expected: str, prefix: str | None
) -> None:
    """Every ⚠ row of §3.3 gives the value Meta's written rules ask for, hashed."""
    assert normalized(field, value, country) == expected, row
    digest = hashed(field, value, country)
    assert digest == sha(expected), row
    if prefix is not None:
        assert digest.startswith(prefix), row


@pytest.mark.parametrize(("row", "field", "value"), DOC_CONFORMANT_DROPS)
def test_doc_conformant_drops(row: int, field: str, value: str) -> None:
    """⚠ rows the SDK would hash as they are are dropped instead."""
    assert hashed(field, value) is None, row


def test_prehashed_sha256_passes_lowercased() -> None:
    """Row 7: an upper-case SHA-256 is taken as a hash and only lowercased, never hashed twice."""
    digest = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    assert hashed("em", digest.upper()) == digest
    assert hashed("ph", f"  {digest}  ") == digest


def test_currency_vectors() -> None:
    """Rows 70 and 71: USD leaves as usd like the SDK; `us dollars` is no currency."""
    from stream.contract.customdata import currency

    assert currency("USD") == "usd"
    assert currency("us dollars") is None


# Our own vectors, per field: (field, input, event country, normalized or None for dropped).
OWN = [
    ("em", "\tJane.DOE@Example.co.uk\n", None, "jane.doe@example.co.uk"),
    ("em", "jane@@example.com", None, None),
    ("em", "jane@example", None, None),
    ("em", "\uff4a\uff41\uff4e\uff45@example.com", None, "jane@example.com"),
    ("ph", "+33 6 12 34 56 78", None, "33612345678"),
    ("ph", "06 12 34 56 78", "fr", "33612345678"),
    ("ph", "07400 123456", "gb", "447400123456"),
    ("ph", "+39 06 1234 5678", None, "390612345678"),  # Italy keeps its leading zero
    ("ph", "(11) 96123-4567", "br", "5511961234567"),
    ("ph", "+4402079460958", None, "442079460958"),  # trunk zero without spaces: the slow path
    ("ph", "+16505551212", None, "16505551212"),  # already E.164: the fast path
    ("ph", "+1 650 555", None, None),
    ("ph", "+999 1234567", None, None),  # no such country code
    ("ph", "020 7946 0958", None, None),  # national number, no country known
    ("fn", "Jean-Luc", None, "jeanluc"),
    ("fn", "D'Artagnan!", None, "dartagnan"),
    ("fn", "...", None, None),
    ("ln", "Groß", None, "groß"),
    ("ln", "García-Pérez", None, "garcíapérez"),
    ("ct", "Saint-Étienne", None, "saintétienne"),
    ("ct", "12345", None, None),
    ("st", "new york", "us", "ny"),
    ("st", "Georgia", "ge", "georgia"),  # outside the US a name stays a name
    ("st", "Bayern", "de", "bayern"),
    ("zp", "SW1A 2AA", "gb", "sw1a2aa"),
    ("zp", "01310-100", "br", "01310100"),
    ("zp", "94035 1234", None, "94035"),
    ("zp", "94035-12", "us", "94035"),  # US: the first 5 digits, whatever follows
    ("zp", "9403512", None, "9403512"),  # unknown country, not a ZIP shape: kept
    ("zp", "00-950", None, "00950"),
    ("zp", "--", None, None),
    ("country", "united kingdom", None, "gb"),
    ("country", "DEU", None, "de"),
    ("country", "Côte d'Ivoire", None, "ci"),
    ("country", "South Korea", None, "kr"),
    ("country", "Atlantis", None, None),
    ("country", "XX", None, None),
    ("db", "16.02.1997", None, "19970216"),
    ("db", "16/02/1997", None, "19970216"),  # day first when the first part cannot be a month
    ("db", "Feb 16, 1997", None, "19970216"),
    ("db", "16 February 1997", None, "19970216"),
    ("db", "1997-02-16T00:00:00Z", None, "19970216"),
    ("db", "1997-02-30", None, None),
    ("db", "1899-12-31", None, None),
    ("db", "2030-01-01", None, None),  # after the current year
    ("db", "97-02-16", None, None),
    ("ge", "FEMALE", None, "f"),
    ("ge", " m ", None, "m"),
    ("ge", "x", None, None),
    ("external_id", "  User-123 ", None, "User-123"),  # trimmed, case kept
    ("external_id", "   ", None, None),
    ("f5first", "O'Brien", None, "obrie"),
    ("fi", "-", None, None),
    ("dobd", "31", None, "31"),
    ("dobd", "0", None, None),
    ("dobm", "13", None, None),
    ("dobm", "09", None, "09"),
    ("doby", "1899", None, None),
    ("doby", "٢٠٠٠", None, None),  # only ASCII digits
]


@pytest.mark.parametrize(("field", "value", "country", "expected"), OWN)
def test_own_vectors(field: str, value: str, country: str | None, expected: str | None) -> None:
    """Each field's rule on the inputs apps really send, including what gets dropped."""
    assert normalized(field, value, country) == expected


RAW = [
    ("client_ip_address", " 203.0.113.9 ", "203.0.113.9"),
    ("client_ip_address", "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"),
    ("client_ip_address", "256.1.1.1", None),
    ("client_ip_address", "localhost", None),
    ("fbc", "fb.1.1554763741205.AbCdEfGhIjKl", "fb.1.1554763741205.AbCdEfGhIjKl"),
    ("fbc", "AbCdEf", None),
    ("fbp", "fb.1.1596403881668.1116446470", "fb.1.1596403881668.1116446470"),
    ("fb_login_id", "12345", "12345"),
    ("fb_login_id", "12a45", None),
    ("madid", "00000000-0000-0000-0000-000000000000", None),
    ("madid", "38400000-8cf0-11bd-b23e-10b96e40000d", "38400000-8cf0-11bd-b23e-10b96e40000d"),
    ("client_user_agent", "  Mozilla/5.0  ", "Mozilla/5.0"),
]


@pytest.mark.parametrize(("field", "value", "expected"), RAW)
def test_raw_fields(field: str, value: str, expected: str | None) -> None:
    """Keys sent unhashed are checked for shape and otherwise sent as the app wrote them (trimmed)."""
    assert fields.RAW_NORMALIZERS[field](value) == expected


def test_every_drop_reason_is_named() -> None:
    """Each hashed and checked raw key has a drop reason of its own."""
    for field in (*fields.field_table(None, YEAR), "client_ip_address", "fbc", "fbp", "madid"):
        assert field in fields.FIELD_REASONS


@pytest.mark.parametrize(("text", "code"), [("England", "gb"), ("U.S.A.", "us"), ("Deutschland", None)])
def test_country_lookup(text: str, code: str | None) -> None:
    """Countries come from pycountry's names and codes plus a short alias list."""
    assert places.country_code(text) == code


def test_phone_region_is_used_only_without_country_code() -> None:
    """An explicit +CC wins over the event's country."""
    assert phones.e164_digits("+44 7400 123456", "US") == "447400123456"
    assert phones.e164_digits("(650) 555-1212", "US") == "16505551212"
