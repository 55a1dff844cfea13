"""Graceful drain with a real process: SIGTERM -> readiness 503 -> still serving -> port closes.

A client polls readiness and keeps sending predictions on fresh connections while the service
is told to stop; more clients open a fresh connection for every liveness probe, so connections
are always arriving when the port closes. Every request that reached the service must get its
answer; only requests that could not connect at all (the port already closed) may fail. (A port
closed with connections in its accept queue resets them: their requests were lost; see
app/server.py.)
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter

import httpx

from tests.app.images import jpeg_bytes
from tests.hostile.server import running_service

DRAIN_S = 2.0


def test_sigterm_drains_before_the_port_closes(service_checkpoint):
    events: list[tuple[float, str, str]] = []  # (time, kind, outcome)
    stop = threading.Event()

    def client_loop(kind: str, send, pause_s: float = 0.0) -> None:  # noqa: ANN001 - callable
        """Call ``send()`` (a fresh connection each time) until stopped, logging each outcome."""
        while not stop.is_set():
            try:
                events.append((time.monotonic(), kind, str(send().status_code)))
            except httpx.ConnectError:
                events.append((time.monotonic(), kind, "refused"))
                time.sleep(0.05)
            except httpx.TransportError as exc:  # reached the server, got no answer
                events.append((time.monotonic(), kind, f"lost:{type(exc).__name__}"))
            time.sleep(pause_s)

    def poll_ready(base: str) -> None:
        client_loop("ready", lambda: httpx.get(f"{base}/health/ready", timeout=5), pause_s=0.05)

    def live_loop(base: str) -> None:  # many short connections: some always await accept()
        client_loop("live", lambda: httpx.get(f"{base}/health/live", timeout=5))

    def predict_loop(base: str, seed: int) -> None:
        photo = jpeg_bytes((320, 240), seed=seed)
        client_loop(
            "predict",
            lambda: httpx.post(f"{base}/v1/predict", files={"file": ("p.jpg", photo)}, timeout=30),
        )

    started = time.monotonic()
    with running_service(service_checkpoint, drain_seconds=str(DRAIN_S)) as service:
        print(f"\nservice ready in {time.monotonic() - started:.1f}s")
        threads = [threading.Thread(target=poll_ready, args=(service.base_url,))]
        threads += [
            threading.Thread(target=predict_loop, args=(service.base_url, seed)) for seed in (1, 2)
        ]
        threads += [threading.Thread(target=live_loop, args=(service.base_url,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        sigterm_at = time.monotonic()
        service.process.send_signal(signal.SIGTERM)  # the main process only, like docker stop
        service.process.wait(timeout=60)
        exited_at = time.monotonic()
        stop.set()
        for thread in threads:
            thread.join(timeout=40)
        log = service.log()

    def first(kind: str, outcome: str) -> float | None:
        times = [t for t, k, o in events if k == kind and o == outcome and t > sigterm_at]
        return min(times) if times else None

    not_ready_at = first("ready", "503")
    refused_at = first("ready", "refused")
    served_while_draining = [
        o for t, k, o in events if k == "predict" and not_ready_at and t > not_ready_at
    ]
    print(
        f"SIGTERM at +0.00s; readiness 503 at +{(not_ready_at or 0) - sigterm_at:.2f}s; "
        f"first refusal seen at +{(refused_at or 0) - sigterm_at:.2f}s; exited at "
        f"+{exited_at - sigterm_at:.2f}s; {served_while_draining.count('200')} predictions "
        f"answered 200 while draining; {len(events)} client events"
    )
    assert not_ready_at is not None, "readiness never said 503 after SIGTERM"
    assert refused_at is None or not_ready_at < refused_at, "port closed before readiness 503"
    assert not_ready_at - sigterm_at < 1.0
    assert served_while_draining.count("200") >= 2, "predictions must go on while draining"
    assert exited_at - sigterm_at >= DRAIN_S, "the drain period was cut short"
    outcomes = {o for _, k, o in events if k == "predict"}
    assert outcomes <= {"200", "refused"}, f"an accepted request was lost or refused: {outcomes}"
    live = Counter(o for _, k, o in events if k == "live")
    print(f"liveness probes on fresh connections: {dict(live)}")
    assert set(live) <= {"200", "refused"}, f"a connected probe was lost: {dict(live)}"
    assert service.process.returncode in (0, -signal.SIGTERM)
    assert "Traceback" not in log, log
    assert "Application shutdown complete" in log


def test_an_upload_still_arriving_when_the_port_closes_gets_503_json(service_checkpoint):
    """A slow upload (within INVASIVE_RECEIVE_TIMEOUT_S) at SIGTERM: uvicorn's graceful-shutdown
    timeout cancelled it after 30 s with a plain-text 500. Now it is answered 503
    shutting_down, in JSON, once the port closes, and the client retries elsewhere."""
    import json
    import socket

    body = (
        b'--b0\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        + jpeg_bytes((320, 240), seed=4) + b"\r\n--b0--\r\n"
    )
    head = (
        "POST /v1/predict HTTP/1.1\r\nHost: test\r\n"
        "Content-Type: multipart/form-data; boundary=b0\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with running_service(service_checkpoint, drain_seconds="0") as service:
        with socket.create_connection(("127.0.0.1", service.port), timeout=20) as client:
            client.sendall(head + body[:100])  # and the rest never comes in time
            time.sleep(0.5)
            started = time.monotonic()
            service.process.send_signal(signal.SIGTERM)
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
                chunk = client.recv(65536)
                if not chunk:
                    break
                answer += chunk
            waited = time.monotonic() - started
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 503 Service Unavailable", answer
        assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"]["code"] == "shutting_down"
        assert b"retry-after" in rest.lower()
        assert waited < 10, f"answered {waited:.1f}s after SIGTERM"
        assert service.process.wait(30) is not None
