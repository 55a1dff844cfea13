"""Open N silent connections to a local server, then watch how many the server still holds."""
import socket, sys, time, urllib.request
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
t0 = time.monotonic()
for _ in range(n):
    s = socket.socket(); s.setblocking(True); s.connect(("127.0.0.1", port)); s.setblocking(False); socks.append(s)
print(f"opened {n} silent connections in {time.monotonic()-t0:.1f}s", flush=True)
def open_count():
    alive = 0
    for s in socks:
        try:
            d = s.recv(1)
            if d == b"": continue  # closed by the server
            alive += 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive
for t in (1, 5, 9, 12, 20, 30):
    time.sleep(max(0, t - (time.monotonic() - t0)))
    st = time.monotonic()
    try:
        code = urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=5).status
    except Exception as e:
        code = type(e).__name__
    print(f"t={t:>2}s still open: {open_count():>5}/{n}; /health/live {code} in {(time.monotonic()-st)*1000:.0f} ms", flush=True)
