-- include: wake.lua
-- The plain publish: append envelopes to the topic stream and wake its consumers.
-- KEYS[1] topic stream, KEYS[2] the topic's wake key, KEYS[3] its fence key, KEYS[4] its
-- sent-marker key prefix, KEYS[5] its closed marker; ARGV envelopes. Returns how many it
-- was given, or the error 'CLOSED' having appended nothing (bus.close_topic).
-- A first attempt only: while the fence key exists (a retry or an outbox flush of this
-- topic ran lately, publish.lua), an envelope whose message id has a sent marker is a
-- late copy of a message a later attempt took over, and is not appended.
local fenced = false
if redis.call('EXISTS', KEYS[3], KEYS[5]) > 0 then  -- usually neither: one look for both
  if redis.call('EXISTS', KEYS[5]) == 1 then
    return redis.error_reply('CLOSED the topic is closed')
  end
  fenced = true
end
for i = 1, #ARGV do
  local data = ARGV[i]
  local late = false
  if fenced and string.sub(data, 1, 7) == '{"id":"' then  -- our encoder puts the id first
    local id = string.sub(data, 8, (string.find(data, '"', 8, true) or 8) - 1)
    late = redis.call('EXISTS', KEYS[4] .. id) == 1
  end
  if not late then
    redis.call('XADD', KEYS[1], '*', 'v', '1', 'm', data)
  end
end
ring(KEYS[2])
return #ARGV
