-- Hand verification jobs of one partition to their streams, each at most once.
--
-- KEYS[1], KEYS[2]: the email and the NIK job streams of the partition;
-- KEYS[2 + j]: the hand-off marker of job j.
-- ARGV[1]: how long a marker lives (seconds); then per job j:
-- ARGV[2j] = 1 (email) or 2 (NIK), ARGV[2j + 1] = the registration id (16 bytes).
--
-- The marker and the XADD are one atomic step, so a job handed off again
-- (its outbox row survived a crash after this script ran) adds nothing.
-- Returns how many jobs were added.
local added = 0
for i = 2, #ARGV, 2 do
  local marker = KEYS[2 + i / 2]
  if redis.call('SET', marker, '1', 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', KEYS[tonumber(ARGV[i])], '*', 'r', ARGV[i + 1])
    added = added + 1
  end
end
return added
