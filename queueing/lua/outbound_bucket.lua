-- A token bucket for calls out of Gelombang (SMTP relay, the ministry's NIK
-- API), shared by every worker process.
--
-- KEYS[1]  the bucket (hash: tokens, at_us)
-- ARGV[1]  rate, tokens per second
-- ARGV[2]  burst, the bucket's size
-- ARGV[3]  how many tokens to reserve (a worker reserves for a batch of calls)
--
-- Reserves the next ARGV[3] tokens and returns the bucket's level before
-- them (a string; it can be negative). The j-th token (1-based) is due
-- max(0, (j - level) / rate) seconds from now: the caller waits that long
-- before its j-th call; it never asks twice, so one script call per batch
-- of outgoing calls however many callers wait. Tokens go below zero while
-- reservations are outstanding, which spaces the calls 1/rate apart. Time
-- comes from the Redis server, so the workers' clocks do not matter.

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
local level = math.min(burst, tokens + (now_us - at_us) * rate / 1000000)
tokens = level - tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at_us', tostring(now_us))
-- A full bucket is the same as no bucket: let an idle one expire.
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return tostring(level)
