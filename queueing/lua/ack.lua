-- Acknowledge a stored batch's entries, then trim what the group has done with.
--
-- KEYS[1]: a partition's intake stream (its only consumer group is ARGV[1]).
-- ARGV[2]: the entry ids, separated by spaces (one argument instead of one
-- per entry: packing two thousand arguments for XACK and XDEL was a tenth of
-- the drain worker's time in redis-py).
--
-- Trimming by MINID instead of XDEL: every entry older than the group's
-- oldest pending one has been delivered and acknowledged, so it goes, whole
-- listpack nodes at a time, and the append-only file gets one short XTRIM
-- instead of the ids again. An entry still pending (in hand, or left by a
-- dead worker until it is reclaimed) keeps the entries after it until then.
-- Returns how many entries were acknowledged.
local stream, group = KEYS[1], ARGV[1]
local ids, acked = {}, 0
for id in string.gmatch(ARGV[2], '%S+') do
  ids[#ids + 1] = id
  if #ids == 1000 then  -- unpack() has a stack limit
    acked = acked + redis.call('XACK', stream, group, unpack(ids))
    ids = {}
  end
end
if #ids > 0 then
  acked = acked + redis.call('XACK', stream, group, unpack(ids))
end

local oldest = redis.call('XPENDING', stream, group, '-', '+', 1)[1]
local keep_from
if oldest then
  keep_from = oldest[1]
else
  -- Nothing pending: everything delivered is done; keep what comes after.
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local fields = {}
    for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
    if fields['name'] == group then
      local ms, seq = string.match(fields['last-delivered-id'], '^(%d+)-(%d+)$')
      keep_from = ms .. '-' .. string.format('%.0f', tonumber(seq) + 1)
    end
  end
end
if keep_from then
  redis.call('XTRIM', stream, 'MINID', keep_from)
end
return acked
