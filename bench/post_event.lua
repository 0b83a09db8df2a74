-- wrk script: one observation per request, every timestamp new (the append path).
-- Arguments (after --): series, bearer token, reject-every (0: none), threads (wrk's -t), "own" to
-- give each thread its own series (<series>_<k>) instead of sharing one ("shared"), and optionally
-- an acknowledgement log: a path prefix <log>.
-- Thread k posts day k, k + T, k + 2T, ... (T threads) from 1700-01-01, so no two requests share a
-- timestamp. Every 100,000 days (1973) it moves on to the next series, <series>_1, <series>_2, ...
-- (bench/stream.py makes enough of them), rather than post days after today, which ingest refuses.
-- With reject-every N every N-th request carries -1, which a log-transformed series refuses (422).
-- With an acknowledgement log every request carries a vintage of its own, which ingest's answer
-- repeats: a minute before the wall-clock second it is sent in (inside ingest's allowed skew, and
-- in the past, so ingest keeps it rather than stamping now), its microseconds (counter * T + k)
-- mod 10^6, so no two requests share one unless 500,000 of them leave in one second. Thread k
-- writes "<series> <vintage>" of each 200 answer to <log>.<k>, so every acknowledged event can be
-- looked up in the database by itself (wrk cannot tell which request an answer belongs to).
-- A 422 counts as refused only when it names the value (observations[0].value); any other answer
-- counts as other. done() prints the answers by status, summed over the threads, as one JSON line.
local threads = {}
DAYS = 100000

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  prefix, token = args[1], args[2]
  every = tonumber(args[3]) or 0
  nthreads = tonumber(args[4])
  own = args[5] == "own"
  acks = args[6] and args[6] ~= "" and assert(io.open(args[6] .. "." .. id, "w")) or nil
  counter, ok, rejected, other = 0, 0, 0, 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. token
end

function request()
  counter = counter + 1
  local step = own and counter or (counter * nthreads + id)
  local epoch = math.floor(step / DAYS)
  local day = os.date("!%Y-%m-%d", -8520336000 + (step % DAYS) * 86400)
  local value = (every > 0 and counter % every == 0) and "-1" or tostring(100 + counter % 97)
  local series = (own and (prefix .. "_" .. id) or prefix) .. (epoch > 0 and ("_" .. epoch) or "")
  local vintage = ""
  if acks then
    local micros = (counter * nthreads + id) % 1000000
    vintage = ',"vintage":"' .. os.date("!%Y-%m-%dT%H:%M:%S", os.time() - 60) .. string.format(".%06dZ", micros) .. '"'
  end
  local body = '{"series_id":"' .. series .. '","observations":[{"ts":"' .. day .. '","value":' .. value .. '}]'
    .. vintage .. '}'
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
    if acks then
      local series = body:match('"series":%s*%[%s*"([^"]+)"')
      local vintage = body:match('"vintage":%s*"([^"]+)"')
      acks:write((series or "?"), " ", (vintage or "?"), "\n")
    end
  elseif status == 422 and body:find('"field":"observations[0].value"', 1, true) then
    rejected = rejected + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local sums = {ok = 0, rejected = 0, other = 0}
  for _, thread in ipairs(threads) do
    for key in pairs(sums) do
      sums[key] = sums[key] + thread:get(key)
    end
  end
  io.write(string.format('STREAM {"ok": %d, "rejected": %d, "other": %d}\n', sums.ok, sums.rejected, sums.other))
end
