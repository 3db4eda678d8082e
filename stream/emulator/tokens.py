"""Which access token is valid for which dataset, and Meta's answer to one that is not (pure).

With no tokens configured every non-empty token is valid for every dataset ("open" mode). With
tokens, a dataset without one does not exist for the caller (100 / 33), a token valid for another
dataset lacks permission (100 / 33), an unknown token is invalid (190). `rotate` replaces a dataset's
token; the previous one then answers "session has expired" (190 / 463), as after a real rotation.
Tokens are compared in constant time and never appear in an answer.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from stream.emulator import answers
from stream.emulator.answers import ErrorAnswer


class TokenBook:
    """The valid token per dataset and the tokens that have expired, with when they did."""

    def __init__(self, tokens: Mapping[str, str] | None = None) -> None:
        if tokens is not None:
            for dataset_id, token in tokens.items():
                if not dataset_id or not token:
                    raise ValueError("dataset ids and tokens must be non-empty")
        self._open = tokens is None
        self._valid: dict[str, str] = dict(tokens or {})
        # dataset -> {old token: when it expired (Unix seconds)}
        self._expired: dict[str, dict[str, float]] = {}

    @property
    def open(self) -> bool:
        """True when datasets without a configured token accept any non-empty token."""
        return self._open

    def datasets(self) -> list[str]:
        """The datasets with a configured token (never the tokens)."""
        return sorted(self._valid)

    def rotate(self, dataset_id: str, token: str, now: float) -> None:
        """Make `token` the one valid token of `dataset_id`; the previous one expires at `now`."""
        if not dataset_id or not token:
            raise ValueError("dataset_id and token must be non-empty strings")
        previous = self._valid.get(dataset_id)
        if previous is not None and previous != token:
            self._expired.setdefault(dataset_id, {})[previous] = now
        self._expired.get(dataset_id, {}).pop(token, None)
        self._valid[dataset_id] = token

    def check(self, dataset_id: str, token: object, now: float, method: str = "post") -> ErrorAnswer | None:
        """Meta's error for using `token` on `dataset_id` in a `method` request, or None when it may."""
        if type(token) is not str or not token:
            return answers.missing_token()
        expected = self._valid.get(dataset_id)
        if expected is not None and hmac.compare_digest(token.encode(), expected.encode()):
            return None
        expired_at = self._expired.get(dataset_id, {}).get(token)
        if expired_at is not None:
            return answers.expired_token(expired_at, now)
        if expected is None:
            if self._open:
                return None
            if self._known(token):
                return answers.unknown_object(dataset_id, method)
            return answers.invalid_token()
        if self._open:
            # In open mode every token was valid before the rotation, so any other one has expired.
            return answers.expired_token(now, now)
        if self._known(token):
            return answers.unknown_object(dataset_id, method)
        return answers.invalid_token()

    def _known(self, token: str) -> bool:
        encoded = token.encode()
        return any(hmac.compare_digest(encoded, valid.encode()) for valid in self._valid.values())
