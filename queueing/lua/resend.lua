-- Take a registration's email hold for a resend: once per hold, whoever took
-- it before (a status poll leaves its hold to the first resend).
--
-- KEYS[1]: the registration's email hold; KEYS[2]: the email priority lane
-- (one partition: one hash tag). ARGV[1]: the registration id (16 bytes);
-- ARGV[2]: the lane's approximate MAXLEN; ARGV[3]: how long the hold lasts
-- (seconds); ARGV[4]: '1' to add the job now (the email is still pending), '0'
-- to take the hold only (the caller moves the email back to pending in
-- PostgreSQL first, then adds the job itself).
--
-- A hold set by a poll means its job is in the lane: a pending email gets no
-- second one. Returns 0 when the resend holds it now, else the remaining time
-- (ms, at least 1) of the resend that holds it.
local hold = KEYS[1]
local before = redis.call('GET', hold)
if before == 'resend' then
  return math.max(redis.call('PTTL', hold), 1)
end
redis.call('SET', hold, 'resend', 'EX', ARGV[3])
if ARGV[4] == '1' and not before then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'r', ARGV[1])
end
return 0
