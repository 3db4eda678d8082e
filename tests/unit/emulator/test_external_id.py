"""external_id: Meta recommends hashing it but accepts it raw, as the SDK sends it."""

from __future__ import annotations

from stream.emulator import answers, rules
from stream.emulator.samples import sample_event, sha256

NOW = 1_790_000_000


def test_raw_external_id_is_accepted_and_counts_as_customer_information() -> None:
    """A raw external_id passes both the reference rules and the fast pass, and alone is enough information."""
    event = sample_event(0, NOW)
    event["user_data"] = {"external_id": ["User-7"]}
    assert rules.check_event(event, NOW) is None
    assert rules.validate_events([event], NOW) is None


def test_hashed_external_id_is_accepted_too() -> None:
    """A SHA-256 external_id is accepted as well."""
    event = sample_event(0, NOW)
    event["user_data"] = {"external_id": [sha256("user-7")]}
    assert rules.validate_events([event], NOW) is None


def test_a_raw_email_is_still_refused() -> None:
    """The must-hash keys keep their rule: a raw email is Meta's unhashed-information error."""
    event = sample_event(0, NOW)
    event["user_data"] = {"em": ["someone@example.com"], "external_id": ["User-7"]}
    problem = rules.validate_events([event], NOW)
    assert problem is not None
    assert problem.subcode == answers.SUBCODE_UNHASHED_FIELD
