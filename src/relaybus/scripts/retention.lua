-- Store what cleanup keeps of a topic: KEYS[1] its retention hash.
-- ARGV[1] 'set': replace the four limits and mark them set (what buses declare no longer
-- changes them); 'at_least': raise each limit to at least the one given, never lower
-- one, and change nothing that was set. ARGV[2..5] keep_ms, keep_len, dlq_keep_ms,
-- dlq_keep_len: integers, -1 for no limit.
-- Returns what is stored: {set (0/1), keep_ms, keep_len, dlq_keep_ms, dlq_keep_len}.
local key, mode = KEYS[1], ARGV[1]
local names = {'keep_ms', 'keep_len', 'dlq_keep_ms', 'dlq_keep_len'}
local stored = {}
local flat = redis.call('HGETALL', key)  -- HGETALL only: one read command in the ACL rule
for i = 1, #flat, 2 do
  stored[flat[i]] = flat[i + 1]
end
if mode == 'set' then
  stored.set = '1'
  for i, name in ipairs(names) do
    stored[name] = ARGV[i + 1]
  end
  redis.call('HSET', key, 'set', '1', names[1], ARGV[2], names[2], ARGV[3], names[3], ARGV[4],
             names[4], ARGV[5])
elseif stored.set ~= '1' then
  for i, name in ipairs(names) do
    local was, given = tonumber(stored[name] or ''), tonumber(ARGV[i + 1])
    -- no limit wins; else the larger; a missing or foreign value is replaced
    if not was or (was >= 0 and (given < 0 or given > was)) then
      stored[name] = ARGV[i + 1]
      redis.call('HSET', key, name, ARGV[i + 1])
    end
  end
end
return {stored.set == '1' and '1' or '0', stored[names[1]] or false, stored[names[2]] or false,
        stored[names[3]] or false, stored[names[4]] or false}
