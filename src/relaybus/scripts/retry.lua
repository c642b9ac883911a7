-- include: wake.lua
-- Schedule a pending entry for redelivery: add it to the delayed set and ack it, or
-- do nothing when it is no longer pending in the group.
-- KEYS[1] source stream, KEYS[2] delayed set, KEYS[3] the topic's wake key (a ring makes
-- waiting consumers read, and learn when the retry falls due)
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] due (ms since epoch), ARGV[4] member
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
ring(KEYS[3])
return 1
