"""Open N silent connections to a local server, then watch how many the server still holds.

``python silent_connections.py PORT N``: at t = 1, 5, 9, 12, 20 and 30 s, how many of the N
connections are still open, and whether ``/health/live`` answers (loopback only).
"""

import socket
import sys
import time
import urllib.request

port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
t0 = time.monotonic()
for _ in range(n):
    s = socket.socket()
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    socks.append(s)
print(f"opened {n} silent connections in {time.monotonic() - t0:.1f}s", flush=True)


def open_count() -> int:
    alive = 0
    for s in socks:
        try:
            if s.recv(1) == b"":
                continue  # closed by the server
            alive += 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


for t in (1, 5, 9, 12, 20, 30):
    time.sleep(max(0, t - (time.monotonic() - t0)))
    started = time.monotonic()
    try:
        code = urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=5).status
    except Exception as exc:  # noqa: BLE001 - the kind of failure is the finding
        code = type(exc).__name__
    print(
        f"t={t:>2}s still open: {open_count():>5}/{n}; /health/live {code} in "
        f"{(time.monotonic() - started) * 1000:.0f} ms",
        flush=True,
    )
