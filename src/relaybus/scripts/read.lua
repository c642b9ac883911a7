-- include: groups.lua
-- include: wake.lua
-- include: due.lua
-- One fetch for one (group, topic): move the topic's due delayed members into their
-- streams, then read new entries from the group's streams, most urgent first, up to
-- ARGV[3] in all, so a caller never gets more than it asked. With ARGV[3] = 0 it only
-- probes: is anything new there for the group? Whenever the group's streams turn out
-- to be drained, the topic's wake key is set in the same step (wake.lua).
-- KEYS[1] delayed set, KEYS[2] topic stream (lane 0), KEYS[3] retry-stream key
-- prefix, KEYS[4] lane-stream key prefix, KEYS[5] set of lanes in use, KEYS[6] this
-- group's retry stream, KEYS[7] the topic's wake key (all share the topic's hash tag)
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] count (0: probe), ARGV[4] now (ms),
-- ARGV[5] max to move, ARGV[6] '' or where to create the group ('0' oldest, '$' new
-- entries only) when it may not exist yet; a probe also takes ARGV[7] an idle time (ms;
-- 0: do not look) and ARGV[8] '1' to look for this consumer's own pending entries; a
-- read with ARGV[7] > 0 (a pull read) first claims entries pending longer than ARGV[7]
-- ms in any consumer of the group, this one included, so nothing a lost reply delivered
-- stays pending unreturned: claim and read are one step
-- (due.lua says what a delayed member is.)
-- Returns {next due (ms) or false, drained, key, {entries}, key, {entries}, ...} (a
-- claiming read: {next due, drained, {id, deliveries, ...}, key, {entries}, ...}, the
-- claimed entries' delivery counts, this one included, and their sections first) where
-- drained is 0 (there may be more), 1 (drained, wake key set) or 2 (drained, but Redis
-- refused to set the wake key: look again later); a probe returns {next due, drained,
-- idle 1|0, own 1|0, pending 1|0}: drained 0 when there is something new to read, idle 1 when an entry is pending longer than
-- ARGV[7] in some consumer, own 1 when this consumer has entries pending, pending 1
-- when any consumer of the group has.
local function lane_key(lane)
  if lane == '0' or lane == '' then
    return KEYS[2]
  end
  return KEYS[4] .. lane
end

-- Make the group on `key` from `start` unless it exists; false when it is missing and
-- cannot be made (Redis refuses XGROUP CREATE while its memory is full - with OOM even
-- where the group exists, so that is looked up).
local function ensure_group(key, start)
  local made = redis.pcall('XGROUP', 'CREATE', key, ARGV[1], start, 'MKSTREAM')
  if not made['err'] or string.sub(made['err'], 1, 9) == 'BUSYGROUP' then
    return true
  end
  local groups = redis.pcall('XINFO', 'GROUPS', key)
  if groups['err'] then
    return false
  end
  for _, flat in ipairs(groups) do
    if group_fields(flat)['name'] == ARGV[1] then
      return true
    end
  end
  return false
end

if ARGV[6] ~= '' then
  if not ensure_group(KEYS[2], ARGV[6]) then
    return redis.error_reply('NOROOM consumer group ' .. ARGV[1] .. ' cannot be made: Redis memory is full')
  end
  -- a retry stream only ever holds this group's entries: always from its start
  ensure_group(KEYS[6], '0')
end

local next_due = promote_due(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[7], ARGV[4], tonumber(ARGV[5]))

local sources = {KEYS[6]}
local lanes = {}
for _, lane in ipairs(redis.call('SMEMBERS', KEYS[5])) do
  if string.match(lane, '^[1-9]$') then  -- anything else in the set was not written by us
    lanes[#lanes + 1] = lane
  end
end
table.sort(lanes, function(a, b) return a > b end)
for _, lane in ipairs(lanes) do
  local key = lane_key(lane)
  -- a lane appears after the group was made: give it the group, from its start
  redis.pcall('XGROUP', 'CREATE', key, ARGV[1], '0', 'MKSTREAM')
  sources[#sources + 1] = key
end
sources[#sources + 1] = KEYS[2]

-- Anything the group has not been handed yet; true also where the stream exists but the
-- group does not (Redis restarted empty, the group was destroyed): the read that follows
-- then fails with NOGROUP, and the reader makes the group again.
local function undelivered(key)
  local groups = redis.pcall('XINFO', 'GROUPS', key)
  if groups['err'] then  -- no such stream: nothing there
    return false
  end
  for _, flat in ipairs(groups) do
    local g = group_fields(flat)
    if g['name'] == ARGV[1] then
      return #redis.call('XRANGE', key, '(' .. g['last-delivered-id'], '+', 'COUNT', 1) > 0
    end
  end
  return true
end

local function pending(key, ...)
  local reply = redis.pcall('XPENDING', key, ARGV[1], ...)
  return not reply['err'] and #reply > 0
end

local wanted = tonumber(ARGV[3])
if wanted == 0 then
  local drained, idle, own, busy = 1, 0, 0, 0
  for _, key in ipairs(sources) do
    if busy == 0 and pending(key, '-', '+', 1) then
      busy = 1
    end
    if drained == 1 and undelivered(key) then
      drained = 0
    end
    if busy == 1 and idle == 0 and ARGV[7] ~= '0' and pending(key, 'IDLE', ARGV[7], '-', '+', 1) then
      idle = 1
    end
    if busy == 1 and own == 0 and ARGV[8] == '1' and pending(key, '-', '+', 1, ARGV[2]) then
      own = 1
    end
  end
  if drained == 1 and not arm(KEYS[7]) then
    drained = 2
  end
  return {next_due, drained, idle, own, busy}
end

-- XCLAIM the entries of `key` pending longer than ARGV[7] ms, up to `left`: their
-- section goes into `out`, their delivery counts into `counts`; returns how many.
-- Redis 6.2 answers an entry deleted while pending with nil (keeping it pending) where
-- 7.x drops it: those are acked, when the nils account for every id not returned.
local function claim_idle(key, left, out, counts)
  local idle = redis.pcall('XPENDING', key, ARGV[1], 'IDLE', ARGV[7], '-', '+', left)
  if idle['err'] or #idle == 0 then  -- no group on that stream yet: nothing pending
    return 0
  end
  local ids, delivered = {}, {}
  for i, p in ipairs(idle) do
    ids[i] = p[1]
    delivered[p[1]] = p[4] + 1
  end
  local live, holes, got = {}, 0, {}
  for _, entry in ipairs(redis.call('XCLAIM', key, ARGV[1], ARGV[2], ARGV[7], unpack(ids))) do
    if entry and entry[1] then
      live[#live + 1] = entry
      got[entry[1]] = true
      counts[#counts + 1] = entry[1]
      counts[#counts + 1] = delivered[entry[1]]
    else
      holes = holes + 1
    end
  end
  if holes > 0 then
    local gone = {}
    for _, id in ipairs(ids) do
      if not got[id] then
        gone[#gone + 1] = id
      end
    end
    if #gone == holes then
      redis.call('XACK', key, ARGV[1], unpack(gone))
    end
  end
  if #live > 0 then
    out[#out + 1] = key
    out[#out + 1] = live
  end
  return #live
end

local left = wanted
local out = {next_due, 0}
if ARGV[7] ~= '0' then
  local counts = {}
  out[3] = counts
  for _, key in ipairs(sources) do
    if left <= 0 then
      break
    end
    left = left - claim_idle(key, left, out, counts)
  end
end
for _, key in ipairs(sources) do
  if left <= 0 then
    break
  end
  local got = redis.pcall('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', left, 'STREAMS', key, '>')
  if got and got['err'] then
    if key == KEYS[2] or string.sub(got['err'], 1, 7) ~= 'NOGROUP' then
      return got  -- the topic stream's NOGROUP: the reader makes the group again
    end
    -- a retry or lane stream without the group (its making was refused while memory was
    -- full): made now from its start, else skipped this time
    got = ensure_group(key, '0') and
      redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', left, 'STREAMS', key, '>')
  end
  if got then
    local entries = got[1][2]
    left = left - #entries
    out[#out + 1] = key
    out[#out + 1] = entries
  end
end
if left > 0 then
  out[2] = arm(KEYS[7]) and 1 or 2
end
return out
