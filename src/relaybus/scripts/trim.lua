-- include: groups.lua
-- Trim one stream's retained history, never past what every group has consumed.
-- KEYS[1] the stream, KEYS[2] the topic stream when KEYS[1] is a priority lane (its
-- groups must all have consumed an entry of the lane), else KEYS[1] again
-- ARGV[1] keep entries younger than this many ms (-1: no age limit),
-- ARGV[2] keep at most this many entries (-1: no length limit),
-- ARGV[3] '1': only entries every consumer group consumed (topic, lane and retry
-- streams); '0': any entry (the DLQ, which has no groups)
-- Returns how many entries were removed. An entry goes when it is older than the age
-- limit or beyond the newest ARGV[2], and (with ARGV[3] '1') consumed by every group.
local key, keep_ms, keep_len = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
if (keep_ms < 0 and keep_len < 0) or redis.call('EXISTS', key) == 0 then
  return 0
end
local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
if not last then
  return 0
end
local ms, seq = string.match(last[1], '(%d+)-(%d+)')
local beyond_last = ms .. '-' .. (tonumber(seq) + 1)

-- the retention cut: entries before it are old enough or beyond the length to go
local cut = nil
if keep_ms >= 0 then
  local now = redis.call('TIME')
  cut = (tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - keep_ms) .. '-0'
end
if keep_len >= 0 then
  local by_len = beyond_last
  if keep_len > 0 then
    local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', keep_len)
    by_len = #newest == keep_len and newest[keep_len][1] or '0-0'
  end
  if not cut or id_less(cut, by_len) then
    cut = by_len
  end
end

if ARGV[3] == '1' then
  local required = nil
  if KEYS[2] ~= key and redis.call('EXISTS', KEYS[2]) == 1 then
    required = redis.call('XINFO', 'GROUPS', KEYS[2])
  end
  local point = safe_point(key, redis.call('XINFO', 'GROUPS', key), required) or beyond_last
  if point == '-' then
    return 0  -- no group: nothing has been consumed
  end
  if id_less(point, cut) then
    cut = point
  end
end
return redis.call('XTRIM', key, 'MINID', cut)
