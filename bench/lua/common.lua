-- What the endpoint scripts share: the bearer token (BENCH_TOKEN), the generated data file
-- (BENCH_DATA, a Lua table), a per-thread number for unique bodies, and a done() that prints the
-- run's numbers as one JSON line, which bench/api.py reads (latencies in microseconds).
local common = {}

function common.authorize()
  local token = os.getenv("BENCH_TOKEN")
  if token and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
end

function common.data()
  return dofile(os.getenv("BENCH_DATA"))
end

-- setup() runs once per thread in the main state: give each thread its number.
local threads = 0
function common.setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function common.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,'
      .. '"write":%d,"status":%d,"timeout":%d},"latency_us":{"min":%d,"mean":%.1f,"max":%d,'
      .. '"stdev":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.min, latency.mean, latency.max, latency.stdev, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end

return common
