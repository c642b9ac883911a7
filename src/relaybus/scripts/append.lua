-- include: wake.lua
-- The plain publish: append envelopes to the topic stream and wake its consumers.
-- KEYS[1] topic stream, KEYS[2] the topic's wake key; ARGV envelopes. Returns how many.
for i = 1, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'v', '1', 'm', ARGV[i])
end
ring(KEYS[2])
return #ARGV
