-- Shared by the scripts that need to know what the consumer groups of a stream have
-- consumed; prepended to them when they are loaded.

local function group_fields(flat)
  local f = {}
  for j = 1, #flat, 2 do
    f[flat[j]] = flat[j + 1]
  end
  return f
end

local function id_less(a, b)
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end

-- The oldest entry some group has not consumed (its oldest pending entry, or the first
-- after its last-delivered id); '-' with no groups, nil when every group consumed all.
-- Every entry before it has been delivered to and acked by every group. `required`
-- (optional) are the groups of the topic stream: a priority lane gets a group only when
-- that group first reads after the lane appeared, so one missing there has read
-- nothing of it yet - then nothing is consumed ('-').
local function safe_point(key, groups, required)
  if #groups == 0 then
    return '-'
  end
  if required then
    local here = {}
    for _, flat in ipairs(groups) do
      here[group_fields(flat)['name']] = true
    end
    for _, flat in ipairs(required) do
      if not here[group_fields(flat)['name']] then
        return '-'
      end
    end
  end
  local point = nil
  for _, flat in ipairs(groups) do
    local g = group_fields(flat)
    local oldest = nil
    if g['pending'] > 0 then
      oldest = redis.call('XPENDING', key, g['name'])[2]
    else
      local after = redis.call('XRANGE', key, '(' .. g['last-delivered-id'], '+', 'COUNT', 1)[1]
      oldest = after and after[1]
    end
    if oldest and (not point or id_less(oldest, point)) then
      point = oldest
    end
  end
  return point
end

