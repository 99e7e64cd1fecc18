-- Put a registration in the verification priority lane of each kind it is waiting
-- for, at most once per hold.
--
-- KEYS: pairs of one partition (one hash tag, one cluster slot): KEYS[2i-1] the
-- registration's hold of a kind, KEYS[2i] that kind's priority lane stream.
-- ARGV[1]: the registration id (16 bytes); ARGV[2]: the lanes' approximate
-- MAXLEN; ARGV[i + 2]: how long pair i's hold lasts (seconds).
--
-- The hold and the job are one atomic step: a job is added only by the call
-- that set the hold, so however often a status page is polled, a kind gets
-- one job per hold. A poll's hold holds 'poll' (a resend's 'resend': see
-- resend.lua). Returns, per pair, 0 when its job was added, else the
-- hold's remaining time (ms, at least 1).
local replies = {}
for i = 1, #KEYS / 2 do
  local hold, lane = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('SET', hold, 'poll', 'NX', 'EX', ARGV[i + 2]) then
    redis.call('XADD', lane, 'MAXLEN', '~', ARGV[2], '*', 'r', ARGV[1])
    replies[i] = 0
  else
    replies[i] = math.max(redis.call('PTTL', hold), 1)
  end
end
return replies
