-- include: wake.lua
-- Replay dead letters: each one is deleted from the DLQ and appended to the retry
-- stream of the group it died in, in one step; one already gone is skipped.
-- KEYS[1] dlq stream, KEYS[2] retry-stream key prefix, KEYS[3] the topic's wake key
-- ARGV: triples of dlq entry id, group, envelope. Returns how many were replayed.
local n = 0
for i = 1, #ARGV, 3 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[2] .. ARGV[i + 1], '*', 'v', '1', 'm', ARGV[i + 2])
    n = n + 1
  end
end
if n > 0 then
  ring(KEYS[3])
end
return n
