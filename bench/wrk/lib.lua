-- Shared by the wrk scripts of bench/run.sh: per-thread random seeds, the id file, and a
-- done() that prints one JSON line ("WRK_JSON {...}") for the runner to parse.
local lib = {}

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_seed", counter * 7919 + os.time())
  table.insert(threads, thread)
end

function lib.seed()
  math.randomseed(thread_seed or os.time())
end

-- Reads the ids written by `order-bench seed` (IDS_FILE), one a line.
function lib.load_ids()
  local path = os.getenv("IDS_FILE") or error("IDS_FILE is not set")
  local ids = {}
  for line in io.lines(path) do
    if #line > 0 then ids[#ids + 1] = line end
  end
  if #ids == 0 then error("no ids in " .. path) end
  return ids
end

function lib.json_escape(s)
  return (s:gsub('\\', '\\\\'):gsub('"', '\\"'):gsub('\n', '\\n'))
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"seconds":%.3f,"rps":%.1f,"bytes":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,"errors_timeout":%d,' ..
    '"lat_mean_us":%.1f,"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_p999_us":%d,"lat_max_us":%d}\n',
    summary.requests, seconds, summary.requests / seconds, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end

return lib
