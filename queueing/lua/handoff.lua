-- Hand one stored batch's verification jobs to its partition's streams, once
-- per kind, while each stream has room.
--
-- KEYS[1], KEYS[2]: the email and the NIK job streams of the partition;
-- KEYS[3], KEYS[4]: the hand-off's marker for each kind.
-- ARGV[1]: how long a marker lives (seconds); ARGV[2]: the registration ids,
-- 16 bytes each, concatenated (one argument instead of one per job: packing
-- a thousand arguments was most of the drain's time in redis-py);
-- ARGV[3]: the most jobs a stream may hold before a kind waits (0: no
-- limit); ARGV[4]: which kinds to relay, "1" or "0" for email then NIK
-- (a kind PostgreSQL records as relayed is not asked again).
--
-- Per kind, the marker and the XADDs are one atomic step, so a hand-off
-- relayed again (its outbox row survived a crash after this script ran) adds
-- nothing. A stream at its limit takes nothing now: the outbox row keeps the
-- jobs in PostgreSQL until the stream has room (a stream below the limit
-- takes the whole row, so the limit is passed by one row at most).
-- Returns, per kind: the jobs added (0: relayed before), or -1: no room yet.
local ids = ARGV[2]
local window = tonumber(ARGV[3])
local statuses = {}
for kind = 1, 2 do
  local status = 0
  if string.sub(ARGV[4], kind, kind) == '1' then
    if window > 0 and redis.call('XLEN', KEYS[kind]) >= window then
      status = -1
    elseif redis.call('SET', KEYS[kind + 2], '1', 'NX', 'EX', ARGV[1]) then
      for i = 1, #ids, 16 do
        redis.call('XADD', KEYS[kind], '*', 'r', string.sub(ids, i, i + 15))
      end
      status = #ids / 16
    end
  end
  statuses[kind] = status
end
return statuses
