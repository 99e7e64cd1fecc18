-- Replay one dead letter: add it back to the stream it came from and delete
-- it from the dead stream, in one step, so a crash or a second replay of the
-- same letter never adds it twice and never loses it.
--
-- KEYS[1]: a partition's dead stream; KEYS[2]: the stream to add it to (the
-- partition's intake stream or one of its verification streams: the same
-- hash tag, so one slot on a cluster).
-- ARGV[1]: the dead entry's id; ARGV[2]: its field holding what to replay
-- (the sealed envelope, or the registration id); ARGV[3]: the field name
-- the new entry gets.
-- The value is read here, from the dead entry itself: the caller never
-- passes a payload back in.
-- Returns the new entry's id; 0 when the dead entry is gone (replayed or
-- dropped meanwhile); -1 when it holds nothing to replay (it stays).
local entry = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])[1]
if not entry then
  return 0
end
local fields, value = entry[2], nil
for i = 1, #fields, 2 do
  if fields[i] == ARGV[2] then
    value = fields[i + 1]
  end
end
if not value or value == '' then
  return -1
end
local id = redis.call('XADD', KEYS[2], '*', ARGV[3], value)
redis.call('XDEL', KEYS[1], ARGV[1])
return id
