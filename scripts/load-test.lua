-- wrk script for scripts/load-test: POSTs the body in $TALLY_LOAD_BODY with
-- the key in $TALLY_LOAD_KEY, counts answers by status in each thread, and
-- writes the totals as JSON to $TALLY_LOAD_RESULT when wrk is done.
local file = assert(io.open(os.getenv("TALLY_LOAD_BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["content-type"] = "application/json"
wrk.headers["x-api-key"] = os.getenv("TALLY_LOAD_KEY")

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  created, server_errors, other = 0, 0, 0
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
  elseif status >= 500 then
    server_errors = server_errors + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local c, s, o = 0, 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("created")
    s = s + t:get("server_errors")
    o = o + t:get("other")
  end
  local e = summary.errors
  local out = assert(io.open(os.getenv("TALLY_LOAD_RESULT"), "w"))
  out:write(string.format(
    '{"answers":%d,"created":%d,"server_errors":%d,"other":%d,"p50_us":%d,"p99_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d}}\n',
    summary.requests, c, s, o, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.timeout))
  out:close()
end
