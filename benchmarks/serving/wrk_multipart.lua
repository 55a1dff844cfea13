-- wrk script: POST pre-built multipart bodies in rotation; print one JSON line from done().
-- Usage: wrk ... -s wrk_multipart.lua URL -- BODY_DIR BODY_COUNT CONTENT_TYPE
-- Each wrk thread runs init() in its own Lua state and pre-formats every request once, so the
-- per-request cost is a table lookup (the client shares the CPU with the server under test).

local requests_ = {}
local counter = 0

function init(args)
  local dir, count, content_type = args[1], tonumber(args[2]), args[3]
  for i = 1, count do
    local path = string.format("%s/body_%03d.bin", dir, i - 1)
    local f = assert(io.open(path, "rb"))
    local body = f:read("*a")
    f:close()
    requests_[i] = wrk.format("POST", nil, { ["Content-Type"] = content_type }, body)
  end
  -- Start each thread at a different body so threads do not send the same photo in lockstep.
  counter = math.random(0, count - 1)
end

function request()
  counter = counter + 1
  return requests_[(counter % #requests_) + 1]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "max": %d, "mean": %.1f, "p50": %d, "p95": %d, "p99": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
