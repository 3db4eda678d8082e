"""Which token may post to which dataset, and Meta's answer when it may not (pure)."""

from __future__ import annotations

import pytest

from stream.emulator.tokens import TokenBook

NOW = 1_790_000_000.0


def _answer(book: TokenBook, dataset: str, token: object) -> str | None:
    problem = book.check(dataset, token, NOW)
    return problem.key if problem is not None else None


@pytest.mark.parametrize(("token", "expected"), [("t", None), ("", "104"), (None, "104"), (5, "104")])
def test_open_mode_takes_any_non_empty_token(token: object, expected: str | None) -> None:
    """Without configured tokens any non-empty string works for any dataset; none at all is 104."""
    book = TokenBook()
    assert _answer(book, "123", token) == expected
    assert _answer(book, "456", token) == expected


@pytest.mark.parametrize(
    ("dataset", "token", "expected"),
    [
        ("1", "tok-1", None),
        ("2", "tok-2", None),
        ("1", "tok-2", "100/33"),  # a valid token without access to this dataset
        ("3", "tok-1", "100/33"),  # an unknown dataset
        ("1", "garbage", "190"),  # a token Meta cannot parse
        ("3", "garbage", "190"),
    ],
)
def test_configured_tokens(dataset: str, token: str, expected: str | None) -> None:
    """With tokens configured, each dataset takes only its own token, as Meta answers otherwise."""
    book = TokenBook({"1": "tok-1", "2": "tok-2"})
    assert _answer(book, dataset, token) == expected


def test_rotation_expires_the_previous_token() -> None:
    """After a rotation the new token works and the old one answers 190 / 463."""
    book = TokenBook({"1": "old"})
    book.rotate("1", "new", NOW)
    assert _answer(book, "1", "new") is None
    problem = book.check("1", "old", NOW + 60)
    assert problem is not None
    assert problem.key == "190/463"
    assert problem.status == 400
    assert "Session has expired" in problem.message
    book.rotate("1", "old", NOW)  # rotating back revives it
    assert _answer(book, "1", "old") is None
    assert _answer(book, "1", "new") == "190/463"


def test_rotation_in_open_mode_expires_every_other_token() -> None:
    """In open mode every token was valid before, so after a rotation any other one has expired."""
    book = TokenBook()
    book.rotate("1", "new", NOW)
    assert _answer(book, "1", "new") is None
    assert _answer(book, "1", "anything") == "190/463"
    assert _answer(book, "2", "anything") is None


def test_answers_never_contain_the_token() -> None:
    """No error message or header holds the token that was sent or the valid one."""
    book = TokenBook({"1": "SECRET-VALID"})
    book.rotate("1", "SECRET-NEW", NOW)
    for token in ("SECRET-VALID", "SECRET-OTHER", "SECRET-NEW"):
        for dataset in ("1", "2"):
            problem = book.check(dataset, token, NOW)
            if problem is not None:
                text = problem.encode("trace").decode() + str(dict(problem.headers))
                assert "SECRET" not in text
    assert book.datasets() == ["1"]


@pytest.mark.parametrize("tokens", [{"": "t"}, {"1": ""}])
def test_empty_ids_or_tokens_are_refused(tokens: dict[str, str]) -> None:
    """An empty dataset id or token in the configuration is refused."""
    with pytest.raises(ValueError, match="non-empty"):
        TokenBook(tokens)
