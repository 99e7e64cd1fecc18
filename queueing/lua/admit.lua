-- Admit a group of registrations into one partition, atomically.
--
-- One call decides, for every registration that arrived together at one door
-- process: replay of a known Idempotency-Key, closed intake, backlog over the
-- partition's high-water share, or a token from the partition's share of the
-- global token bucket; and appends the admitted ones to the stream. All keys
-- carry the partition's hash tag, so this runs on Redis Cluster unchanged.
--
-- KEYS[1]  stream of admitted registrations
-- KEYS[2]  token bucket hash {tokens, ts}
-- KEYS[3]  this call's outcome record (unique per call; see the end)
-- ARGV[1]  refill rate, tokens per second (this partition's share)
-- ARGV[2]  bucket capacity (this partition's share, >= 1)
-- ARGV[3]  backlog high-water mark (this partition's share)
-- ARGV[4]  "1" when rate limiting is enabled
-- ARGV[5]  "1" when intake is open
-- ARGV[6]  idempotency period in seconds (queue.idempotency_ttl_seconds)
-- ARGV[7]  the stem of this partition's idempotency hashes (keys.py)
-- ARGV[8]  how long the outcome record is kept (seconds)
-- ARGV[9]  number of items n; then n quintuples from ARGV[10]:
--          the bucket of the item's idempotency record ("": no key), the
--          record's field (the key's digest), registration id (16 bytes),
--          envelope (msgpack bytes), and its mode: "" regular, "1" it
--          holds its turn in the waiting room (it takes no token: its place
--          was its admission), "r" replay only (a known key's registration,
--          else {0, 0} and nothing taken: the door queues it in the line)
--
-- The idempotency hashes are named here, `<stem><period>:<bucket>`, from the
-- period of the Redis server's clock: a door's clock could be seconds off,
-- and two doors on either side of a period's end would then write and look
-- up one key in different hashes (admitting it twice). They carry the
-- partition's hash tag, so they live in KEYS[1]'s cluster slot.
--
-- Returns n replies, then the whole tokens left:
--   {1}                      admitted
--   {2, registration id}     replay of an earlier registration with this key
--   {0, wait in ms}          no token; when one would be there for this item
--   {-1}                     backlog full
--   {-2}                     intake closed
-- or the error FENCED when a door already found this call had not run
-- (outcome.lua): it must not run now.

local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local high_water = tonumber(ARGV[3])
local limiting = ARGV[4] == '1'
local open = ARGV[5] == '1'
local ttl = tonumber(ARGV[6])
local stem = ARGV[7]
local outcome_ttl = ARGV[8]
local n = tonumber(ARGV[9])

local known = redis.call('GET', KEYS[3])
if known == 'fenced' then
  return redis.error_reply('FENCED this admission call was settled as not run')
elseif known then
  -- The same call run again (a client that re-sent it): what it decided then.
  return cmsgpack.unpack(known)
end

-- One clock for every door process: the Redis server's.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
-- A record goes to this period's hash, which expires at the end of the next
-- one (kept ttl to 2 ttl); a lookup also reads the previous period's.
local period = math.floor(tonumber(clock[1]) / ttl)
local current = stem .. string.format('%d', period) .. ':'
local previous = stem .. string.format('%d', period - 1) .. ':'
local expire_at = string.format('%d', (period + 2) * ttl)

local tokens = capacity
local state = redis.call('HMGET', KEYS[2], 'tokens', 'ts')
if state[1] then
  local elapsed = now - tonumber(state[2])
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(capacity, tonumber(state[1]) + elapsed * rate)
end

local backlog = redis.call('XLEN', KEYS[1])
local replies = {}
local taken = 0
local waiting = 0

for i = 1, n do
  local at = 10 + (i - 1) * 5
  local mode = ARGV[at + 4]
  local ticketed = mode == '1'
  local bucket = ARGV[at]
  local field = ARGV[at + 1]
  local record = false
  local prior = false
  if bucket ~= '' then
    record = current .. bucket
    prior = redis.call('HGET', record, field)
      or redis.call('HGET', previous .. bucket, field)
  end

  if prior then
    replies[i] = {2, prior}
  elseif mode == 'r' then
    replies[i] = {0, 0}
  elseif not open then
    replies[i] = {-2}
  elseif backlog >= high_water then
    replies[i] = {-1}
  elseif limiting and tokens < 1 and not ticketed then
    -- Each refused item of the group is told when its own token would be
    -- there, so the group's retries spread over the refill instead of
    -- returning together.
    waiting = waiting + 1
    replies[i] = {0, math.ceil((waiting - tokens) / rate * 1000)}
  else
    if limiting and not ticketed then
      tokens = tokens - 1
      taken = taken + 1
    end
    redis.call('XADD', KEYS[1], '*', 'm', ARGV[at + 3])
    backlog = backlog + 1
    if record then
      redis.call('HSET', record, field, ARGV[at + 2])
      redis.call('EXPIREAT', record, expire_at)
    end
    replies[i] = {1}
  end
end

if taken > 0 then
  -- Stored as "tokens at time ts"; untouched buckets need no write, since the
  -- refill is recomputed from the last write.
  redis.call('HSET', KEYS[2], 'tokens', tostring(tokens), 'ts', tostring(now))
end

replies[n + 1] = math.floor(tokens)
-- Kept for a door that sent this call and lost the reply: it reads the
-- decisions (outcome.lua) instead of answering a failure for a registration
-- this call stored. Written last: nothing above fails once a write was made
-- (Redis 7 lets a script that has written go on writing past maxmemory).
redis.call('SET', KEYS[3], cmsgpack.pack(replies), 'EX', outcome_ttl)
return replies
