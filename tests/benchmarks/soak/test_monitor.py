"""The soak's liveness probe: its own process, answers on the shared monotonic clock."""

from __future__ import annotations

import http.server
import socket
import threading
import time

from benchmarks.soak.monitor import LivenessProbe


class _Live(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200 if self.path == "/health/live" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_the_probe_reports_each_answer_and_a_server_that_is_gone():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Live)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    t0 = time.monotonic()
    probe = LivenessProbe(
        f"http://127.0.0.1:{server.server_port}/health/live", t0, interval_s=0.1, timeout_s=2
    ).start()
    deadline = time.monotonic() + 10
    while len(probe.answers) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.shutdown()
    server.server_close()
    answered = len(probe.answers)
    while len(probe.answers) < answered + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    probe.stop()

    ok = probe.answers[:answered]
    assert answered >= 3 and all(status == 200 for _, status, _ in ok)
    assert all(0 <= t < 10 and 0 <= seconds < 2 for t, _, seconds in ok)
    assert [t for t, _, _ in ok] == sorted(t for t, _, _ in ok)
    assert probe.answers[-1][1] is None  # refused: no status


def test_stop_ends_the_probe_process():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    probe = LivenessProbe(f"http://127.0.0.1:{port}/health/live", time.monotonic(), 0.1, 1).start()
    time.sleep(0.3)
    probe.stop()
    assert probe._proc is not None and probe._proc.poll() is not None
