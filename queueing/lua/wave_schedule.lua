-- Write a wave's schedule into its state hash; draw its seed when it has none.
--
-- KEYS: every key of the wave (queueing/keys.py WaveKeys.all(), the state hash
-- first; one hash tag). ARGV[1..3]: prequeue_from, opens_at, closes_at (Unix s);
-- ARGV[4], ARGV[5]: a fresh seed and its SHA-256 (hex), used only when the state
-- has no seed; ARGV[6]: now (Unix s); ARGV[7]: "1" to refuse when the stored
-- pre-queue has started.
--
-- A state without a seed is a new wave: whatever a cancelled wave of the same
-- name left behind (a door's tick just after the cancel) is deleted first, so a
-- new wave never inherits an old pre-queue. A state with a seed keeps it: two
-- doors scheduling the same configured wave at once agree on one seed, and a
-- published seed_sha256 never changes.
-- Returns 1 (created, seed drawn), 0 (schedule written) or -1 (refused: started).
local state = KEYS[1]
if redis.call('HEXISTS', state, 'seed') == 0 then
  redis.call('DEL', unpack(KEYS))
  redis.call('HSET', state, 'prequeue_from', ARGV[1], 'opens_at', ARGV[2],
             'closes_at', ARGV[3], 'seed', ARGV[4], 'seed_sha256', ARGV[5])
  return 1
end
if ARGV[7] == '1' then
  local started = redis.call('HGET', state, 'prequeue_from')
  if started and tonumber(started) <= tonumber(ARGV[6]) then
    return -1
  end
end
redis.call('HSET', state, 'prequeue_from', ARGV[1], 'opens_at', ARGV[2], 'closes_at', ARGV[3])
return 0
