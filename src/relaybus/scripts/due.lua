-- include: wake.lua
-- Shared by the scripts that move a topic's due delayed members into their streams (a
-- consumer's read, a follower's read). A member is "<target>|<envelope>": target
-- "*<lane>" is the topic's lane stream, anything else the group whose retry stream gets it.
-- A member not of our making (no '|', a lane that is no 0-9) goes to the topic stream as
-- it is: consumers find it undecodable and dead-letter it; it never stops the topic.
-- Returns the next due time (ms) left in the set, or false.
local function promote_due(delayed, stream, retry_prefix, lane_prefix, wake, now, max)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, max)
  for _, member in ipairs(due) do
    local target_stream, envelope = stream, member
    local bar = string.find(member, '|', 1, true)
    if bar then
      local target = string.sub(member, 1, bar - 1)
      envelope = string.sub(member, bar + 1)
      if string.sub(target, 1, 1) ~= '*' then
        target_stream = retry_prefix .. target
      elseif string.match(target, '^%*[1-9]$') then
        target_stream = lane_prefix .. string.sub(target, 2)
      end
    end
    -- refused while Redis's memory is full: stays delayed for a later read, and the read
    -- goes on, so consumers keep draining (acks and cleanup are what free memory)
    if redis.pcall('XADD', target_stream, '*', 'v', '1', 'm', envelope)['err'] then
      break
    end
    redis.call('ZREM', delayed, member)
  end
  if #due > 0 then
    ring(wake)  -- other readers may be waiting for what just fell due
  end
  return redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')[2] or false
end
