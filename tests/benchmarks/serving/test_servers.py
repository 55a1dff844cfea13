"""Process handling against a stand-in server (python's http.server): start, ready, watch, stop."""

import sys
import time

import psutil
import pytest

from benchmarks.serving.servers import ResourceMonitor, RunningServer, ServerSpec, free_port


def test_server_is_started_measured_and_stopped_with_its_children(tmp_path):
    port = free_port()
    # A parent that spawns a child, like LitServe's workers: stop() must end both.
    code = (
        "import subprocess, sys, http.server, functools;"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port={port},"
        " bind='127.0.0.1')"
    )
    spec = ServerSpec("stand-in", [sys.executable, "-c", code], ready_path="/", port=port)
    server = RunningServer(spec, tmp_path / "logs" / "stand-in.log", ready_timeout_s=30)
    with server:
        assert 0 < server.cold_start_s < 30
        root = psutil.Process(server.proc.pid)
        deadline = time.monotonic() + 5
        while not root.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = root.children()[0]
        with ResourceMonitor(server.proc.pid, interval_s=0.02) as monitor:
            time.sleep(0.2)
        assert monitor.peak_rss > 5_000_000  # two python processes
        assert 0 <= monitor.cpu_cores < 2.5
    assert server.proc.poll() is not None
    child.wait(timeout=5)  # raises TimeoutExpired if the child outlived stop()
    assert not child.is_running()


def test_server_that_dies_reports_its_log(tmp_path):
    argv = [sys.executable, "-c", "import sys; print('no checkpoint here'); sys.exit(2)"]
    spec = ServerSpec("broken", argv, port=free_port())
    with pytest.raises(RuntimeError, match="exited with code 2.*\n.*no checkpoint here"):
        RunningServer(spec, tmp_path / "broken.log", ready_timeout_s=30).start()


def test_cpu_of_children_that_exit_inside_the_window_is_counted():
    """The service recycles decode processes: their CPU is the server's, not background."""
    import subprocess

    burn = "import time; t = time.process_time()\nwhile time.process_time() - t < 0.4: pass"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "time.sleep(0.3)\n"
        f"for _ in range(2): subprocess.run([sys.executable, '-c', {burn!r}])\n"
        "time.sleep(0.5)\n")])
    try:
        with ResourceMonitor(parent.pid, interval_s=0.02) as monitor:
            parent.wait(timeout=30)
        # two children burned 0.4 s each and were gone before the window closed
        assert monitor.cpu_s >= 0.7
    finally:
        parent.kill()


def test_ready_waits_until_every_process_of_a_multi_process_server_listens(tmp_path):
    """INVASIVE_PROCESSES=N listens N times, each process once warm: ready means all N."""
    port = free_port()
    # Answers /health/ready at once on one SO_REUSEPORT socket; a second listens 1.5 s later.
    code = (
        "import socket, threading, time, http.server\n"
        "def sock():\n"
        "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)\n"
        f"    s.bind(('127.0.0.1', {port})); return s\n"
        "first, second = sock(), sock()\n"
        "first.listen()\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.end_headers()\n"
        "def serve(s):\n"
        "    srv = http.server.HTTPServer(('127.0.0.1', 0), H, bind_and_activate=False)\n"
        "    srv.socket = s; srv.serve_forever()\n"
        "threading.Thread(target=serve, args=(first,), daemon=True).start()\n"
        "time.sleep(1.5); second.listen(); serve(second)\n"
    )
    spec = ServerSpec("two", [sys.executable, "-c", code], port=port, listeners=2)
    with RunningServer(spec, tmp_path / "two.log", ready_timeout_s=30) as server:
        assert server.cold_start_s >= 1.5
    one = ServerSpec("one", [sys.executable, "-c", code], port=free_port(), listeners=1)
    one.argv[-1] = code.replace(str(port), str(one.port))
    with RunningServer(one, tmp_path / "one.log", ready_timeout_s=30) as server:
        assert server.cold_start_s < 1.5
