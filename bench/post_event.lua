-- wrk script: one observation per request, every timestamp new (the append path).
-- Arguments (after --): series, bearer token, reject-every (0: none), threads (wrk's -t), and
-- "own" to give each thread its own series (<series>_<k>) instead of sharing one.
-- Thread k posts day k, k + T, k + 2T, ... (T threads) from 1700-01-01, so no two requests share a
-- timestamp. Every 100,000 days (1973) it moves on to the next series, <series>_1, <series>_2, ...
-- (bench/stream.py makes enough of them), rather than post days after today, which ingest refuses.
-- With reject-every N every N-th request carries -1, which a log-transformed series refuses (422).
-- done() prints the answers by status, summed over the threads, as one JSON line.
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
  local body = '{"series_id":"' .. series .. '","observations":[{"ts":"' .. day .. '","value":' .. value .. '}]}'
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  elseif status == 422 then
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
