"""The pure parts of the API benchmark (bench/api.py): reading wrk's numbers, writing its data file,
and telling whether two servers answered alike."""

from __future__ import annotations

import json
from uuid import UUID

import pytest

from bench import api, verify, wrk

WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:18100/healthz
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.29ms    1.68ms  26.21ms   94.37%
  Latency Distribution
     50%    2.98ms
     99%   12.13ms
  14140 requests in 3.00s, 1.88MB read
Requests/sec:   4713.20
BENCH_JSON {"requests":14140,"duration_us":3000127,"bytes":1971020,"errors":{"connect":0,"read":0,\
"write":0,"status":3,"timeout":1},"latency_us":{"min":611,"mean":3291.5,"max":26210,"stdev":1680.2,\
"p50":2980,"p90":4120,"p99":12130,"p999":20012}}
"""


def test_parse_reads_the_line_the_lua_done_prints() -> None:
    result = wrk.parse(WRK_OUTPUT)

    assert result.requests == 14140
    assert result.rps == pytest.approx(14140 / 3.000127)
    assert result.latency_ms["p50"] == pytest.approx(2.98)
    assert result.latency_ms["p99"] == pytest.approx(12.13)
    assert result.errors == {"connect": 0, "read": 0, "write": 0, "status": 3, "timeout": 1}
    assert result.failed == 4


def test_parse_without_the_line_says_what_wrk_printed() -> None:
    with pytest.raises(wrk.WrkError, match="unable to connect"):
        wrk.parse("unable to connect to 127.0.0.1:18100 Connection refused\n")


def test_lua_table_holds_every_string_quoted() -> None:
    chunk = wrk.lua_table({"task_ids": ["a", "b"], "login_bodies": ['{"email":"x@y.z"}']})

    assert chunk == (
        'return {\n  task_ids = {"a", "b"},\n  login_bodies = {"{\\"email\\":\\"x@y.z\\"}"},\n}\n'
    )


def _answer(body: object, status: int = 200, **headers: str) -> verify.Answer:
    return verify.Answer(status, {"content-type": "application/json", **headers}, json.dumps(body).encode())


def test_the_same_json_in_other_bytes_is_only_a_note() -> None:
    ours = verify.Answer(200, {"content-type": "application/json"}, b'{"a":1,"b":2}')
    theirs = verify.Answer(200, {"content-type": "application/json"}, b'{"b": 2, "a": 1}')

    found = verify.compare(ours, theirs)

    assert found.problems == []
    assert found.notes


def test_a_different_value_status_or_etag_is_a_problem_with_a_diff() -> None:
    ours = _answer({"title": "Fix it", "version": 1}, etag='"1"')
    theirs = _answer({"title": "Fix it", "version": 2}, status=201, etag='"2"')

    problems = verify.compare(ours, theirs).problems

    assert problems[0] == "status: ours 200, baseline 201"
    assert problems[1] == "header etag: ours '\"1\"', baseline '\"2\"'"
    assert '- "version": 1' in problems[2]
    assert '+ "version": 2' in problems[2]


def test_masked_keys_and_location_ids_may_differ_at_any_depth() -> None:
    mask = frozenset({"id", "created_at"})
    ours = _answer(
        {"id": "a", "items": [{"id": "b", "created_at": "t1", "title": "x"}]},
        location="/api/v1/orgs/o/tasks/01a2199c-4b6b-73b4-a6e7-fda40a09cd68",
    )
    theirs = _answer(
        {"id": "c", "items": [{"id": "d", "created_at": "t2", "title": "x"}]},
        location="/api/v1/orgs/o/tasks/01a2199c-4b86-7fa3-b264-1b76684307ba",
    )

    assert verify.compare(ours, theirs, mask=mask).problems == []
    theirs_other_title = _answer({"id": "c", "items": [{"id": "d", "created_at": "t2", "title": "y"}]})
    assert verify.compare(ours, theirs_other_title, mask=mask).problems


def test_rows_compare_by_what_their_ids_and_times_are() -> None:
    task = UUID("01a2199c-4b6b-73b4-a6e7-fda40a09cd68")
    names = {str(task): "<new>", "01a2199c-0000-7000-8000-000000000001": "<org>", "WEB-7": "<key>"}
    payload = json.dumps(
        {
            "task_id": str(task),
            "org_id": "01a2199c-0000-7000-8000-000000000001",
            "key": "WEB-7",
            "event_id": "01a2199c-4b86-7fa3-b264-1b76684307ba",
            "occurred_at": "2026-11-26T20:46:43.016467+00:00",
        }
    )

    assert json.loads(verify._comparable("payload", payload, names)) == {
        "task_id": "<new>",
        "org_id": "<org>",
        "key": "<key>",
        "event_id": "<uuid>",
        "occurred_at": "<time>",
    }
    assert verify._comparable("request_id", None, names) == "NULL"
    assert verify._comparable("request_id", "abc", names) == "<set>"


def test_the_table_says_which_targets_are_met_and_by_how_much_one_is_missed() -> None:
    def side(rps: float) -> dict[str, float]:
        return {"rps": rps, "p50_ms": 5.0, "p99_ms": 9.0, "errors": 0}

    report = {
        "commit": "abc1234",
        "at": "2030-01-01T00:00:00+00:00",
        "results_file": "bench/results/latest.json",
        "machine": {"cpu": "CPU", "cores": 2, "python": "3.11", "postgresql": "15", "wrk": "wrk 4"},
        "config": {"connections": 16, "rounds": 3, "duration_s": 10.0},
        "dataset": {"users": 3000, "tasks": 100000},
        "endpoints": {
            "me": {"ours": side(600), "baseline": side(1000), "ratio": 0.6},
            "create": {"ours": side(300), "baseline": side(1000), "ratio": 0.3},
        },
        "memory_mb": {"ours": {"VmRSS": 150.0, "VmHWM": 160.0}},
        "startup": {"seconds": [1.0, 2.5, 3.0], "median_s": 2.5},
    }

    table = api.markdown(report)

    assert "| `GET /auth/me` | 600.0 | 5.00 | 9.00 | 1,000.0 | 5.00 | 9.00 | 0.60 | ≥ 0.50 | met |" in table
    assert "| create a task | 300.0 |" in table
    assert "| 0.30 | ≥ 0.40 | missed by 0.10 |" in table
    assert "| 150 MB (160 MB) | < 200 MB | met |" in table
    assert "| 2.50 s | < 2 s | missed by 0.50 s |" in table
