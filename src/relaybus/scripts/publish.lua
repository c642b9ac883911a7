-- Append one message, atomically with its dedup check, its priority lane and its delay.
-- KEYS[1] dedup key (any key of the topic when there is no dedup key), KEYS[2] the
-- lane stream, KEYS[3] delayed set, KEYS[4] the topic's set of lanes in use
-- ARGV[1] envelope, ARGV[2] message id, ARGV[3] dedup window ms (0: no dedup),
-- ARGV[4] due ms (0: now), ARGV[5] lane (0-9)
-- Returns the message id: the original's when this is a duplicate inside the window.
if tonumber(ARGV[3]) > 0 then
  local original = redis.call('GET', KEYS[1])
  if original then
    return original
  end
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
if ARGV[5] ~= '0' then
  redis.call('SADD', KEYS[4], ARGV[5])
end
if tonumber(ARGV[4]) > 0 then
  redis.call('ZADD', KEYS[3], ARGV[4], '*' .. ARGV[5] .. '|' .. ARGV[1])
else
  redis.call('XADD', KEYS[2], '*', 'v', '1', 'm', ARGV[1])
end
return ARGV[2]
