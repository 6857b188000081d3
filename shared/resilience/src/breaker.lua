-- The circuit breaker of one dependency, shared by every instance.
-- Mirrors `BreakerState` (breaker.rs) step for step; Redis runs a script
-- atomically, so two instances never decide on the same old state.
--
-- KEYS[1]  the breaker's hash: state, failures (consecutive), opened (ms),
--          probe (ms: until when the half-open probe holds its slot), and
--          per window bucket `c:<index>` (calls) and `f:<index>` (failures)
-- ARGV     op ('acquire' | 'success' | 'failure'), now (ms), consecutive
--          failures that open, least calls for the rate rule, failure
--          rate (%) that opens, bucket (ms), buckets per window, open (ms),
--          probe lease (ms), probe ('1' when the result is the probe's)
-- Returns  acquire: {'allow' | 'probe' | 'reject', retry after (ms)};
--          success/failure: {state after}
local key = KEYS[1]
local op = ARGV[1]
local now = tonumber(ARGV[2])
local consecutive = tonumber(ARGV[3])
local min_calls = tonumber(ARGV[4])
local rate = tonumber(ARGV[5])
local bucket_ms = tonumber(ARGV[6])
local buckets = tonumber(ARGV[7])
local open_ms = tonumber(ARGV[8])
local lease_ms = tonumber(ARGV[9])
local probe = ARGV[10] == '1'
-- An idle breaker's hash goes away by itself (absent = closed, no calls).
local ttl = bucket_ms * buckets + open_ms + lease_ms + 60000

local h = redis.call('HMGET', key, 'state', 'failures', 'opened', 'probe')
local state = h[1] or 'closed'
local failures = tonumber(h[2] or '0')
local opened = tonumber(h[3] or '0')
local probe_until = tonumber(h[4] or '0')

local function open_now()
  redis.call('DEL', key)
  redis.call('HSET', key, 'state', 'open', 'failures', 0, 'opened', now, 'probe', 0)
  redis.call('PEXPIRE', key, ttl)
  return {'open'}
end

if op == 'acquire' then
  if state == 'closed' then
    return {'allow', 0}
  end
  if state == 'open' then
    if now < opened + open_ms then
      return {'reject', opened + open_ms - now}
    end
  elseif now < probe_until then
    return {'reject', probe_until - now}
  end
  redis.call('HSET', key, 'state', 'half-open', 'probe', now + lease_ms)
  redis.call('PEXPIRE', key, ttl)
  return {'probe', 0}
end

local success = op == 'success'
if state == 'half-open' then
  -- Only the probe decides; other results are of calls sent before.
  if not probe then
    return {state}
  end
  if success then
    redis.call('DEL', key)
    return {'closed'}
  end
  return open_now()
end
if state == 'open' then
  return {state}
end

local index = math.floor(now / bucket_ms)
local calls, failed = 1, 0
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  local kind, n = string.match(fields[i], '^([cf]):(%d+)$')
  if kind then
    if tonumber(n) + buckets <= index then
      redis.call('HDEL', key, fields[i])
    elseif kind == 'c' then
      calls = calls + tonumber(fields[i + 1])
    else
      failed = failed + tonumber(fields[i + 1])
    end
  end
end
redis.call('HINCRBY', key, 'c:' .. index, 1)
if success then
  failures = 0
else
  failures = failures + 1
  failed = failed + 1
  redis.call('HINCRBY', key, 'f:' .. index, 1)
  if failures >= consecutive or (calls >= min_calls and failed * 100 >= rate * calls) then
    return open_now()
  end
end
redis.call('HSET', key, 'state', 'closed', 'failures', failures)
redis.call('PEXPIRE', key, ttl)
return {'closed'}
