-- Move one pending entry to the dead-letter stream: append there and ack here, or
-- do nothing when the entry is no longer pending in the group (acked or moved by
-- another consumer). Never in both places, never in neither.
-- KEYS[1] source stream, KEYS[2] dlq stream
-- ARGV[1] group, ARGV[2] entry id, ARGV[3..] field/value pairs of the dlq entry
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 then
  return false
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return id
