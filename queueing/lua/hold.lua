-- Take a registration's priority hold of one kind, without a job (a resend
-- takes it before PostgreSQL is changed, and adds its job after).
--
-- KEYS[1]: the hold; ARGV[1]: how long it lasts (seconds).
-- Returns 0 when this call took it, else its remaining time (ms, at least 1).
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
return math.max(redis.call('PTTL', KEYS[1]), 1)
