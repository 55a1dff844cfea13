from pathlib import Path

import pytest

from benchmarks.serving import loadgen
from benchmarks.serving.loadgen import (
    LUA_SCRIPT,
    LoadGeneratorMissing,
    parse_wrk_output,
    require_wrk,
    wrk_command,
)

WRK_STDOUT = """Running 5s test @ http://127.0.0.1:8000/v1/predict
  1 threads and 8 connections
WRK_JSON {"requests": 500, "duration_us": 5000000, "bytes": 12345, "errors": {"connect": 0, \
"read": 1, "write": 0, "status": 20, "timeout": 2}, "latency_us": {"min": 900, "max": 250000, \
"mean": 80123.4, "p50": 75000, "p95": 150000, "p99": 210000}}
Requests/sec:    100.00
"""


def test_parse_wrk_output_reads_the_json_line():
    result = parse_wrk_output(WRK_STDOUT, concurrency=8, client_cpu_s=0.5)
    assert result.concurrency == 8
    assert result.duration_s == 5.0
    assert result.requests == 500
    assert result.error_count == 23
    # non-2xx responses are counted by wrk as requests too; they are not images served
    assert result.ok_requests == 480
    assert result.images_per_s == pytest.approx(96.0)
    assert result.latency_ms["p50_ms"] == 75.0
    assert result.latency_ms["p99_ms"] == 210.0
    assert result.latency_ms["mean_ms"] == pytest.approx(80.1234)
    assert result.client_cpu_s == 0.5


def test_parse_wrk_output_without_json_line_says_what_wrk_printed():
    with pytest.raises(RuntimeError, match="unable to connect"):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n", 1)


def test_missing_wrk_gives_the_install_hint(monkeypatch):
    monkeypatch.setattr(loadgen.shutil, "which", lambda name: None)
    with pytest.raises(LoadGeneratorMissing, match="apt-get install -y wrk"):
        require_wrk()


def test_wrk_command_passes_bodies_to_the_lua_script(monkeypatch):
    monkeypatch.setattr(loadgen.shutil, "which", lambda name: "/usr/bin/wrk")
    cmd = wrk_command(
        "http://h:1/p",
        Path("/b"),
        16,
        "multipart/form-data; boundary=x",
        concurrency=32,
        duration_s=15,
        timeout_s=60,
    )
    assert cmd[:6] == ["/usr/bin/wrk", "-t1", "-c32", "-d15s", "--timeout=60s", "-s"]
    assert cmd[6] == str(LUA_SCRIPT)
    assert cmd[7:] == ["http://h:1/p", "--", "/b", "16", "multipart/form-data; boundary=x"]


def test_lua_script_reads_the_arguments_the_command_passes():
    lua = LUA_SCRIPT.read_text()
    assert "body_%03d.bin" in lua  # the names fixtures.write_payload_set writes
    assert "WRK_JSON" in lua and "percentile(99)" in lua


def test_a_window_with_no_answer_has_no_latency_rather_than_zero():
    stdout = WRK_STDOUT.replace('"requests": 500', '"requests": 0').replace(
        '"status": 20', '"status": 0'
    )
    result = parse_wrk_output(stdout, concurrency=8)
    assert result.images_per_s == 0.0
    assert result.latency_ms["p50_ms"] is None and result.latency_ms["p99_ms"] is None
