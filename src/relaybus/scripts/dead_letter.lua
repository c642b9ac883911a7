-- Move one pending entry to the dead-letter stream: append there and ack here, or
-- do nothing when the entry is no longer pending in the group (acked or moved by
-- another consumer). Never in both places, never in neither. With KEYS[3] (a request
-- on one server), the requester is told in the same step: a failure reply appended to
-- its inbox, if the inbox still exists.
-- KEYS[1] source stream, KEYS[2] dlq stream, KEYS[3] (optional) the requester's inbox
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] the failure reply (only with KEYS[3]),
-- then the field/value pairs of the dlq entry
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 then
  return false
end
local first = 3
if KEYS[3] then
  first = 4
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, first))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if KEYS[3] then  -- pcall: a foreign key there must not fail the move made above
  redis.pcall('XADD', KEYS[3], 'NOMKSTREAM', '*', 'v', '1', 'm', ARGV[3])
end
return id
