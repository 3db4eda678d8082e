"""The dead-letter tools' pure text (the broker side is tests/integration/test_dlq_tools.py)."""

from __future__ import annotations

from stream.tools import dlq as dlqtools


def test_missing_topic_line_says_nothing_was_dead_lettered_and_where_the_name_came_from() -> None:
    """One line: the topic, that it holds no letters because none were written, and where to check a typo."""
    line = dlqtools.missing_topic_line("conversions.dlq", "kafka.dlq_topic in config/prod.toml")
    assert "\n" not in line
    assert "topic conversions.dlq does not exist" in line
    assert "nothing has been dead-lettered" in line
    assert line.endswith("check kafka.dlq_topic in config/prod.toml for a typo)")
