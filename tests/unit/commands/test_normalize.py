"""`capi-stream normalize`: one JSON answer per input line, in order, bad lines included; exit codes."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.cli import main

NOW = 1_790_000_000
PURCHASE = {
    "event_name": "Purchase",
    "event_time": NOW - 10,
    "event_id": "o-1",
    "app_id": "com.example.app",
    "user_data": {"em": "John_Smith@gmail.com", "ph": "(650) 555-1212"},
    "custom_data": {"value": 4.5, "currency": "USD"},
    "app_data": {"advertiser_tracking_enabled": True, "extinfo": ["a2", "", "", "", "14"]},
}


def run_cli(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch, lines: list[bytes], *args: str
) -> tuple[int, list[dict[str, Any]], str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n".join(lines) + b"\n")))
    code = main(["normalize", "--now", str(NOW), *args])
    out, err = capsysbinary.readouterr()
    return code, [orjson.loads(line) for line in out.splitlines()], err.decode()


def test_answers_each_line_in_order(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events, rejections and bad records each get their line, in input order; bad records give exit 1."""
    stale = {**PURCHASE, "event_time": NOW - 8 * 86400}
    lines = [
        orjson.dumps(PURCHASE),
        b"{not json",
        orjson.dumps(stale),
        b"[1, 2]",
        orjson.dumps({**PURCHASE, "event_time": "soon"}),
    ]
    code, answers, err = run_cli(capsysbinary, monkeypatch, lines, "--default-country", "us")
    assert code == 1
    assert len(answers) == 5
    assert answers[0]["event"]["user_data"]["ph"] == [
        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
    ]
    assert answers[0]["dropped"] == []
    assert answers[1] == {"rejected": {"reason": "bad_record", "detail": "not JSON"}}
    assert answers[2]["rejected"]["reason"] == "event_too_old"
    assert answers[3]["rejected"]["reason"] == "bad_record"
    assert answers[4] == {
        "rejected": {"reason": "bad_record", "detail": "ConversionEvent.event_time: got str, expected long"}
    }
    assert "5 lines: 1 events, 1 rejected, 3 bad records" in err


def test_bad_record_detail_never_echoes_values(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema misfit names the field and types, not the (possibly personal) value."""
    line = orjson.dumps({**PURCHASE, "user_data": {"em": 12345678}})
    _, answers, _ = run_cli(capsysbinary, monkeypatch, [line])
    assert answers[0]["rejected"]["reason"] == "bad_record"
    assert "12345678" not in answers[0]["rejected"]["detail"]


def test_all_records_exit_zero_with_drops(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only records (even rejected ones) give exit 0; dropped fields are listed with their reasons."""
    record = {**PURCHASE, "user_data": {**PURCHASE["user_data"], "ph": "12"}}
    code, answers, _ = run_cli(capsysbinary, monkeypatch, [orjson.dumps(record)])
    assert code == 0
    assert answers[0]["dropped"] == [{"field": "user_data.ph", "reason": "invalid_phone"}]


def test_reads_a_file(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """A file argument is read instead of stdin."""
    path = tmp_path / "events.jsonl"
    path.write_bytes(orjson.dumps(PURCHASE) + b"\n" + orjson.dumps({**PURCHASE, "consent": False}) + b"\n")
    assert main(["normalize", str(path), "--now", str(NOW)]) == 0
    answers = [orjson.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    assert [next(iter(a)) for a in answers] == ["event", "rejected"]
    assert answers[1]["rejected"]["reason"] == "no_consent"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--default-country", "XX"], "--default-country 'XX' is not an ISO 3166-1 alpha-2"),
        (["--default-country", "USA"], "is not an ISO 3166-1 alpha-2"),
        (["--now", "-5"], "--now must be Unix seconds"),
        (["/nonexistent/events.jsonl"], "cannot read /nonexistent/events.jsonl"),
    ],
)
def test_bad_usage_exits_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad flag or file gives one clear line on stderr and exit 2."""
    assert main(["normalize", *argv]) == 2
    assert message in capsys.readouterr().err


def test_config_sets_country_and_consent_per_app(tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """With --config, each app's destination decides the phone country and whether consent is required."""
    config = tmp_path / "capi.toml"
    config.write_text(
        '[destinations.shop]\ndataset_id = "123"\napp_ids = ["com.example.app"]\n'
        'token_env = "X_TOKEN"\ndefault_country = "GB"\nrequire_consent = true\n'
    )
    events = tmp_path / "e.jsonl"
    national = {**PURCHASE, "consent": True, "user_data": {"ph": "07400 123456"}}
    unknown = {**PURCHASE, "consent": None}
    events.write_bytes(orjson.dumps(national) + b"\n" + orjson.dumps(unknown) + b"\n")
    code = main(["normalize", str(events), "--config", str(config), "--now", str(NOW)])
    answers = [orjson.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    assert code == 0
    assert answers[0]["event"]["user_data"]["ph"] == [
        "d2db976dff17e6a44bd3a25a2ba91efc63ccb18de90db7a560e7cf93544934bd"
    ]
    assert answers[1]["rejected"]["reason"] == "no_consent"


def test_command_line_entry_point(tmp_path: Path) -> None:
    """The installed `capi-stream normalize` reads stdin and writes JSON lines."""
    result = subprocess.run(
        [sys.executable, "-m", "stream", "normalize", "--now", str(NOW)],
        input=orjson.dumps(PURCHASE) + b"\n\n",
        capture_output=True,
        check=False,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 1  # the empty second line is a bad record
    assert orjson.loads(lines[0])["event"]["event_id"] == "o-1"
    assert orjson.loads(lines[1])["rejected"]["reason"] == "bad_record"


def test_bench_normalize_reports_both_contenders(capsys: pytest.CaptureFixture[str]) -> None:
    """`bench normalize` runs our stage and the SDK on the same events and prints both rates and the ratio."""
    assert main(["bench", "normalize", "--events", "40", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "bench normalize: 40 generated app events" in out
    for label in (
        "capi-stream, caches on",
        "capi-stream, caches off",
        "Meta SDK facebook-business 26.0.3",
        "speed vs SDK",
        "targets:",
        "for scale, the floor of a Python stage",
    ):
        assert label in out


def test_bench_normalize_floor_builds_an_event_per_record() -> None:
    """The floor stand-in does the per-record bookkeeping for every record: one event dict each, no skips."""
    from stream.benchmarks.normalize import NOW, floor_stage
    from stream.contract.userdata import PERSON_KEYS
    from stream.tools.samples import generate

    events = list(generate(30, 3, NOW))
    assert floor_stage(events, PERSON_KEYS)() == 30


def test_bench_normalize_rejects_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad country or size is a usage error."""
    assert main(["bench", "normalize", "--events", "0"]) == 2
    assert main(["bench", "normalize", "--events", "5", "--default-country", "XX"]) == 2
    assert "--default-country 'XX'" in capsys.readouterr().err


def test_bench_runs_contenders_in_pipeline_batches_with_the_collector_paused() -> None:
    """Each record is handled in order with the collector paused, as stream.pipeline.prepare runs a batch."""
    import gc

    from stream.benchmarks.normalize import in_batches

    seen: list[tuple[int, bool]] = []

    def handle(record: int) -> int:
        seen.append((record, gc.isenabled()))
        return record * 2

    assert gc.isenabled()
    assert in_batches(handle, list(range(7)), 3)() == [0, 2, 4, 6, 8, 10, 12]
    assert seen == [(i, False) for i in range(7)]
    assert gc.isenabled()


def test_a_phone_without_country_code_or_country_is_warned_about_not_guessed(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No default country and no event country: a national phone is dropped or read with its leading digits
    as the country code, and the answer says which instead of passing it silently."""
    unreadable = {**PURCHASE, "user_data": {"em": "a@b.example", "ph": "(415) 555-0134"}}
    code, answers, _err = run_cli(capsysbinary, monkeypatch, [orjson.dumps(unreadable), orjson.dumps(PURCHASE)])
    assert code == 0
    dropped, read_as_code = answers
    assert "ph" not in dropped["event"]["user_data"]
    assert dropped["warnings"] == [
        "user_data.ph: 1 number(s) without a country code and no country for the event (user_data.country, "
        "--default-country, or the destination's default_country with --config): dropped, not guessed"]
    [warning] = read_as_code["warnings"]
    assert "leading digits were read as the country code (+650...)" in warning


def test_no_warning_when_the_country_is_known(capsysbinary: pytest.CaptureFixture[bytes],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """With --default-country (or +CC numbers) the phone is sent and nothing is warned."""
    code, answers, _err = run_cli(capsysbinary, monkeypatch, [orjson.dumps(PURCHASE)], "--default-country", "US")
    assert code == 0
    assert "warnings" not in answers[0]
    assert answers[0]["event"]["user_data"]["ph"]
    with_code = {**PURCHASE, "user_data": {"ph": "+1 650 555 1212"}}
    _code, answers, _err = run_cli(capsysbinary, monkeypatch, [orjson.dumps(with_code)])
    assert "warnings" not in answers[0]


def test_explain_shows_values_before_hashing_drop_reasons_country_and_age(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--explain adds each field's normalized value, the pipeline's drop reason, the country and the age in days."""
    record = {**PURCHASE, "event_time": NOW - 3 * 86400,
              "user_data": {"em": " John_Smith@Gmail.com ", "ph": "not a phone", "country": "us",
                            "fn": "a" * 64}}
    code, answers, _err = run_cli(capsysbinary, monkeypatch, [orjson.dumps(record)], "--explain")
    assert code == 0
    explained = answers[0]["explain"]
    assert explained["country"] == "US"
    assert explained["age_days"] == 3.0
    assert explained["max_age_days"] == 7
    ud = explained["user_data"]
    assert ud["em"] == {"normalized": "john_smith@gmail.com"}
    assert ud["ph"] == {"normalized": None, "why": "invalid_phone"}
    assert ud["fn"]["why"] == "already a SHA-256 hash: sent as is"
    assert ud["country"] == {"normalized": "us"}


def test_explain_on_a_rejected_event_keeps_the_rejection_reason(
    capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event older than 7 days is rejected with its reason and --explain shows how old it is."""
    old = {**PURCHASE, "event_time": NOW - 9 * 86400}
    _code, answers, _err = run_cli(capsysbinary, monkeypatch, [orjson.dumps(old)], "--explain")
    assert answers[0]["rejected"]["reason"]
    assert answers[0]["explain"]["age_days"] == 9.0
