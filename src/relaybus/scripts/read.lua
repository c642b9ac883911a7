-- One round trip per consumer read: first move due members of the topic's delayed
-- set into their streams, then read new entries from the group's streams in
-- priority order, up to ARGV[3] in all, so a caller never gets more than it asked.
-- KEYS[1] delayed set, KEYS[2] topic stream, KEYS[3] retry-stream key prefix,
-- KEYS[4..] the streams to read, most urgent first (all share the topic's hash tag)
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] count, ARGV[4] now (ms), ARGV[5] max to move
-- A delayed member is "<target>|<envelope>": target "*" is the topic stream, otherwise
-- the group whose retry stream gets it. Returns key, {entries}, key, {entries}, ...
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4], 'LIMIT', 0, tonumber(ARGV[5]))
for _, member in ipairs(due) do
  local bar = string.find(member, '|', 1, true)
  local target = string.sub(member, 1, bar - 1)
  local stream = KEYS[2]
  if target ~= '*' then
    stream = KEYS[3] .. target
  end
  redis.call('XADD', stream, '*', 'v', '1', 'm', string.sub(member, bar + 1))
  redis.call('ZREM', KEYS[1], member)
end
local left = tonumber(ARGV[3])
local out = {}
for i = 4, #KEYS do
  if left <= 0 then
    break
  end
  local got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', left, 'STREAMS', KEYS[i], '>')
  if got then
    local entries = got[1][2]
    left = left - #entries
    out[#out + 1] = KEYS[i]
    out[#out + 1] = entries
  end
end
return out
