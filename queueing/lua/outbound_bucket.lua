-- A token bucket for calls out of Gelombang (SMTP relay, the ministry's NIK
-- API), shared by every worker process.
--
-- KEYS[1]  the bucket (hash: tokens, at_us)
-- ARGV[1]  rate, tokens per second
-- ARGV[2]  burst, the bucket's size
--
-- Takes one token and returns 0, or returns how many microseconds until one
-- is due. Time comes from the Redis server, so the workers' clocks do not
-- matter.

local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])

local state = redis.call('HMGET', KEYS[1], 'tokens', 'at_us')
local tokens = tonumber(state[1])
local at_us = tonumber(state[2])
if tokens == nil or at_us == nil then
  tokens = burst
  at_us = now_us
end
tokens = math.min(burst, tokens + (now_us - at_us) * rate / 1000000)

local wait_us = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait_us = math.ceil((1 - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at_us', tostring(now_us))
-- A full bucket is the same as no bucket: let an idle one expire.
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait_us
