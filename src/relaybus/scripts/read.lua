-- One round trip per consumer read: first move due members of the topic's delayed
-- set into their streams, then read new entries from the group's streams, most
-- urgent first, up to ARGV[3] in all, so a caller never gets more than it asked.
-- KEYS[1] delayed set, KEYS[2] topic stream (lane 0), KEYS[3] retry-stream key
-- prefix, KEYS[4] lane-stream key prefix, KEYS[5] set of lanes in use, KEYS[6] this
-- group's retry stream (all share the topic's hash tag)
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] count, ARGV[4] now (ms), ARGV[5] max to move
-- A delayed member is "<target>|<envelope>": target "*<lane>" is the topic's lane
-- stream, anything else the group whose retry stream gets it.
-- Returns key, {entries}, key, {entries}, ...
local function lane_key(lane)
  if lane == '0' or lane == '' then
    return KEYS[2]
  end
  return KEYS[4] .. lane
end

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[4], 'LIMIT', 0, tonumber(ARGV[5]))
for _, member in ipairs(due) do
  local bar = string.find(member, '|', 1, true)
  local target = string.sub(member, 1, bar - 1)
  local stream
  if string.sub(target, 1, 1) == '*' then
    stream = lane_key(string.sub(target, 2))
  else
    stream = KEYS[3] .. target
  end
  redis.call('XADD', stream, '*', 'v', '1', 'm', string.sub(member, bar + 1))
  redis.call('ZREM', KEYS[1], member)
end

local sources = {KEYS[6]}
local lanes = redis.call('SMEMBERS', KEYS[5])
table.sort(lanes, function(a, b) return tonumber(a) > tonumber(b) end)
for _, lane in ipairs(lanes) do
  local key = lane_key(lane)
  -- a lane appears after the group was made: give it the group, from its start
  redis.pcall('XGROUP', 'CREATE', key, ARGV[1], '0', 'MKSTREAM')
  sources[#sources + 1] = key
end
sources[#sources + 1] = KEYS[2]

local left = tonumber(ARGV[3])
local out = {}
for _, key in ipairs(sources) do
  if left <= 0 then
    break
  end
  local got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', left, 'STREAMS', key, '>')
  if got then
    local entries = got[1][2]
    left = left - #entries
    out[#out + 1] = key
    out[#out + 1] = entries
  end
end
return out
