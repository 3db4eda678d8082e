"""The KRaft cluster id a new broker is formatted with, made in Python instead of a JVM start."""

from __future__ import annotations

import base64

from stream.tools.kafka import new_cluster_id


def test_a_cluster_id_is_sixteen_bytes_in_url_safe_base64_without_padding() -> None:
    ids = [new_cluster_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        assert len(text) == 22
        assert "=" not in text
        assert not text.startswith("-")
        raw = base64.urlsafe_b64decode(text + "==")
        assert len(raw) == 16
        assert raw not in (bytes(16), bytes(15) + b"\x01")
        assert base64.urlsafe_b64encode(raw).decode().rstrip("=") == text
