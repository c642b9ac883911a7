-- include: wake.lua
-- include: due.lua
-- Close a topic (docs/streams.md): mark it closed - every publish script refuses it from
-- here on, in its own atomic step - move what is due of the delayed set, drop the delayed
-- publishes not yet due (a follower ends at the end of the stream: they would come after
-- it), set every key of the topic to expire ARGV[1] ms later, and ring its followers.
-- KEYS[1] closed marker, KEYS[2] topic stream, KEYS[3] delayed set, KEYS[4] retry-stream
-- key prefix, KEYS[5] lane-stream key prefix, KEYS[6] set of lanes, KEYS[7] wake key,
-- then the topic's other keys to expire (counters, DLQ)
-- ARGV[1] keep (ms), ARGV[2] now (ms). Returns how many delayed publishes it dropped.
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
promote_due(KEYS[3], KEYS[2], KEYS[4], KEYS[5], KEYS[7], ARGV[2], 1000000)
local dropped = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  if string.sub(member, 1, 1) == '*' then  -- a publish, not a group's retry
    redis.call('ZREM', KEYS[3], member)
    dropped = dropped + 1
  end
end
local keys = {}
for i = 2, #KEYS do
  if i ~= 4 and i ~= 5 then
    keys[#keys + 1] = KEYS[i]
  end
end
for _, lane in ipairs(redis.call('SMEMBERS', KEYS[6])) do
  if string.match(lane, '^[1-9]$') then  -- anything else in the set was not written by us
    keys[#keys + 1] = KEYS[5] .. lane
  end
end
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[2])
if not groups['err'] then
  for _, flat in ipairs(groups) do
    for j = 1, #flat, 2 do
      if flat[j] == 'name' then
        keys[#keys + 1] = KEYS[4] .. flat[j + 1]
      end
    end
  end
end
for _, key in ipairs(keys) do
  redis.call('PEXPIRE', key, ARGV[1])
end
ring(KEYS[7])
return dropped
