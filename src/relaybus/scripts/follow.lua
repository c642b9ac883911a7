-- include: wake.lua
-- include: due.lua
-- One read of a follower (docs/streams.md): move the topic's due delayed members into
-- their streams, then up to ARGV[2] entries of the topic stream after ARGV[1]. No
-- consumer group: followers only ever read, each from its own position. When nothing
-- is there the topic's wake key is armed in the same step (wake.lua), so a publish
-- after this read rings; or, if the topic is closed, the follower is told it has all.
-- KEYS[1] topic stream, KEYS[2] delayed set, KEYS[3] retry-stream key prefix, KEYS[4]
-- lane-stream key prefix, KEYS[5] set of lanes in use, KEYS[6] wake key, KEYS[7] closed
-- marker (all share the topic's hash tag)
-- ARGV[1] the last entry id read ('' for the oldest retained), ARGV[2] count, ARGV[3]
-- now (ms), ARGV[4] max delayed members to move
-- Returns {next due (ms) or false, state, {entries}}: state 0 (there may be more), 1
-- (drained, wake key armed), 2 (drained, Redis refused the wake key: look again later),
-- 3 (drained and closed: nothing more will come); or the error 'LANES' when the topic
-- has priority lanes, whose entries no single position orders.
local next_due = promote_due(KEYS[2], KEYS[1], KEYS[3], KEYS[4], KEYS[6], ARGV[3], tonumber(ARGV[4]))
if redis.call('EXISTS', KEYS[5]) == 1 then
  return redis.error_reply('LANES the topic has priority lanes')
end
local from = ARGV[1] == '' and '-' or '(' .. ARGV[1]
local entries = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', tonumber(ARGV[2]))
local state = 0
if #entries == 0 then
  if redis.call('EXISTS', KEYS[7]) == 1 then
    state = 3
  elseif arm(KEYS[6]) then
    state = 1
  else
    state = 2
  end
end
return {next_due, state, entries}
