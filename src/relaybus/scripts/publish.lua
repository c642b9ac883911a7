-- include: groups.lua
-- include: wake.lua
-- Append a batch of messages to one topic, atomically with their dedup checks, their
-- priority lanes, their delays and the topic's max_queue_size.
-- KEYS[1] topic stream (lane 0), KEYS[2] delayed set, KEYS[3] set of lanes in use,
-- KEYS[4] counters hash, KEYS[5] lane-stream key prefix, KEYS[6] sent-marker key prefix,
-- KEYS[7] the topic's fence key, then one per message: its dedup key (KEYS[1] where
-- unused), and last the topic's closed marker and its wake key (all keys share the
-- topic's hash tag)
-- ARGV[1] max_queue_size (0: none), ARGV[2] overflow ('reject' | 'drop_oldest'),
-- ARGV[3], ARGV[4]: a window of entry-id times (ms, ARGV[4] may be '+'; 0 0: a first
-- attempt) in which an earlier attempt of this batch would have appended - a retry
-- after a lost reply, an outbox flush: a message found there or in the delayed set at
-- its due time is not written again; ARGV[5] sent-marker TTL ms, ARGV[6] this attempt's
-- stamp (ms, later attempts higher), ARGV[7] fence TTL ms,
-- then five per message: envelope, id, dedup window ms (0: no dedup), due ms (0: now), lane
-- Fences (docs/guarantees.md, "Late bytes"): a retry or flush leaves, per message id, a
-- sent marker - '1': written (by it or an earlier attempt), 'r<stamp>': the attempt of
-- that stamp was refused - and sets the fence key; any attempt finding '1' appends
-- nothing, and one no later than a refusal is void (error 'STALE', nothing written):
-- whichever attempt of a message runs second appends nothing, in any order of arrival.
-- First attempts (stamp 0) look at markers only while the fence key exists.
-- Returns the ids in order (the original's for a duplicate inside its window), or the
-- error 'QUEUEFULL <unconsumed> <incoming>' or 'CLOSED' (bus.close_topic: a batch with
-- anything left to write) having appended nothing.
local n = (#ARGV - 7) / 5
local wake = KEYS[#KEYS]
local check_from, mark_ms, stamp = tonumber(ARGV[3]), tonumber(ARGV[5]), tonumber(ARGV[6])
local retry = check_from > 0

local function lane_key(lane)
  if lane == '0' then
    return KEYS[1]
  end
  return KEYS[5] .. lane
end

local function arg(i, k)  -- message i's k-th argument
  return ARGV[7 + (i - 1) * 5 + k]
end

-- Per id: true where a sent marker says it is written; error STALE where a later attempt
-- was refused.
local function marked()
  local found = {}
  if not retry and redis.call('EXISTS', KEYS[7]) == 0 then
    return found
  end
  for i = 1, n do
    local id = arg(i, 2)
    local m = redis.call('GET', KEYS[6] .. id)
    if m == '1' then
      found[id] = true
    elseif m and string.sub(m, 1, 1) == 'r' and stamp <= (tonumber(string.sub(m, 2)) or 0) then
      return nil
    end
  end
  return found
end

-- The ids of this batch an earlier attempt wrote: one pass over each lane's window
-- (our encoder puts the id first in the envelope), and the delayed set at each due time.
local function already_written(found)
  local wanted, lanes = {}, {}
  for i = 1, n do
    local id = arg(i, 2)
    if found[id] then
      -- a sent marker said so
    elseif tonumber(arg(i, 4)) > 0 then
      local member = '*' .. arg(i, 5) .. '|{"id":"' .. id .. '"'
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], arg(i, 4), arg(i, 4))) do
        if string.sub(m, 1, #member) == member then
          found[id] = true
        end
      end
    else
      wanted[id] = true
      lanes[arg(i, 5)] = true
    end
  end
  for lane in pairs(lanes) do
    local cursor = check_from .. '-0'
    while true do
      local page = redis.call('XRANGE', lane_key(lane), cursor, ARGV[4], 'COUNT', 500)
      for _, entry in ipairs(page) do
        local f = entry[2]
        for j = 1, #f, 2 do
          if f[j] == 'm' and string.sub(f[j + 1], 1, 7) == '{"id":"' then
            local id = string.sub(f[j + 1], 8, (string.find(f[j + 1], '"', 8, true) or 8) - 1)
            if wanted[id] then
              found[id] = true
            end
          end
        end
      end
      if #page < 500 then
        break
      end
      cursor = '(' .. page[#page][1]
    end
  end
  return found
end

-- Leave this attempt's markers (a retry or flush only): `value` for each id not written.
local function fence(value, append)
  if not retry then
    return
  end
  for i = 1, n do
    local v = append == nil and value or (append[i] and value) or '1'
    redis.call('SET', KEYS[6] .. arg(i, 2), v, 'PX', mark_ms)
  end
  redis.call('SET', KEYS[7], '1', 'PX', ARGV[7])
end

-- 1. which messages are duplicates (of a remembered key, of one earlier in the batch, or
-- already written by another attempt)
local written = marked()
if not written then
  return redis.error_reply('STALE a later attempt of this publish was refused; this one appended nothing')
end
if retry then
  written = already_written(written)
end
local ids, append, seen, incoming = {}, {}, {}, 0
for i = 1, n do
  local id, window, dedup = arg(i, 2), tonumber(arg(i, 3)), KEYS[7 + i]
  local original = nil
  if window > 0 then
    original = seen[dedup] or redis.call('GET', dedup)
    seen[dedup] = original or id
  end
  if not original and written[id] then
    original = id
  end
  ids[i] = original or id
  append[i] = not original
  if append[i] and tonumber(arg(i, 4)) == 0 then
    incoming = incoming + 1
  end
end

if redis.call('EXISTS', KEYS[#KEYS - 1]) == 1 then
  for i = 1, n do
    if append[i] then
      return redis.error_reply('CLOSED the topic is closed')
    end
  end
end

-- 2. room for them: unconsumed entries are, for the group furthest behind, its pending
-- entries plus those not yet delivered to it, over the topic's stream and lanes
local function topic_streams()
  local keys = {KEYS[1]}
  for _, lane in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    keys[#keys + 1] = lane_key(lane)
  end
  table.sort(keys)  -- the topic stream ("...:stream") after its lanes ("...:lane:N")
  table.insert(keys, 1, table.remove(keys))  -- lowest priority first: dropped first
  return keys
end

local function unconsumed(keys, limit)
  local totals, names, plain = {}, {}, 0
  local lengths, per_stream = {}, {}
  for s, key in ipairs(keys) do
    lengths[s] = redis.call('XLEN', key)
    per_stream[s] = {}
    if lengths[s] > 0 then
      local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1][1]
      for _, flat in ipairs(redis.call('XINFO', 'GROUPS', key)) do
        local g = group_fields(flat)
        local lag = g['lag']
        if id_less(g['last-delivered-id'], first) then
          lag = lengths[s]  -- everything left is undelivered (Redis 7.0 also counts trimmed entries)
        elseif not lag then  -- Redis < 7, or a lag Redis cannot tell after deletions
          lag = #redis.call('XRANGE', key, '(' .. g['last-delivered-id'], '+', 'COUNT', limit)
        end
        per_stream[s][g['name']] = g['pending'] + lag
        if not totals[g['name']] then
          totals[g['name']] = 0
          names[#names + 1] = g['name']
        end
      end
    end
  end
  if #names == 0 then
    for s = 1, #keys do
      plain = plain + lengths[s]
    end
    return plain
  end
  local worst = 0
  for _, name in ipairs(names) do
    local total = 0
    for s = 1, #keys do
      total = total + (per_stream[s][name] or lengths[s])  -- a stream the group never read
    end
    if total > worst then
      worst = total
    end
  end
  return worst
end

-- drop_oldest: remove the oldest entries of one stream - what every group consumed,
-- then `count` more - acking removed entries that were pending, so no group waits for
-- them. Returns how many not-yet-consumed entries went.
local function drop_front(key, count)
  local groups = redis.call('XINFO', 'GROUPS', key)
  local required = nil
  if key ~= KEYS[1] and redis.call('EXISTS', KEYS[1]) == 1 then
    required = redis.call('XINFO', 'GROUPS', KEYS[1])
  end
  local point = safe_point(key, groups, required)
  if not point then
    return 0
  end
  local victims = redis.call('XRANGE', key, point, '+', 'COUNT', count + 1)
  local keep = victims[count + 1]
  if keep then
    redis.call('XTRIM', key, 'MINID', keep[1])
  else
    redis.call('XTRIM', key, 'MAXLEN', 0)
  end
  local upto = keep and ('(' .. keep[1]) or '+'
  for _, flat in ipairs(groups) do
    local name = group_fields(flat)['name']
    for _, p in ipairs(redis.call('XPENDING', key, name, '-', upto, 100000)) do
      redis.call('XACK', key, name, p[1])
    end
  end
  return math.min(#victims, count)
end

local max = tonumber(ARGV[1])
if max > 0 and incoming > 0 then
  local keys = topic_streams()
  local over = unconsumed(keys, max) + incoming - max
  if over > 0 and (ARGV[2] ~= 'drop_oldest' or incoming > max) then
    fence('r' .. ARGV[6], append)  -- void the earlier attempts: the caller hears "refused"
    return redis.error_reply('QUEUEFULL ' .. (over + max - incoming) .. ' ' .. incoming)
  end
  local dropped, progress = 0, true
  while over > 0 and progress do
    progress = false
    for _, key in ipairs(keys) do
      if over > 0 then
        local gone = drop_front(key, over)
        if gone > 0 then
          dropped, progress = dropped + gone, true
          over = unconsumed(keys, max) + incoming - max
        end
      end
    end
  end
  if dropped > 0 then
    redis.call('HINCRBY', KEYS[4], 'dropped_overflow', dropped)
  end
end

-- 3. write (a delayed entry rings too: consumers learn when it falls due)
for i = 1, n do
  if append[i] then
    local data, id, window, due, lane = arg(i, 1), arg(i, 2), arg(i, 3), tonumber(arg(i, 4)), arg(i, 5)
    if tonumber(window) > 0 then
      redis.call('SET', KEYS[7 + i], id, 'PX', window)
    end
    if lane ~= '0' then
      redis.call('SADD', KEYS[3], lane)
    end
    if due > 0 then
      redis.call('ZADD', KEYS[2], due, '*' .. lane .. '|' .. data)
    else
      redis.call('XADD', lane_key(lane), '*', 'v', '1', 'm', data)
    end
  end
end
fence('1')
ring(wake)
return ids
