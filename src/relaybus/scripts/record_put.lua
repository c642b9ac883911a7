-- KEYS[1]: the namespace's hash. ARGV: field, value, tag, expected version ('' any, '0'
-- absent), tags the stored record must have ('' any, else newline-separated).
-- Returns {1, new version, tag} or {0, stored version (0: absent), stored tag}.
local stored = redis.call('HGET', KEYS[1], ARGV[1])
local version, tag = 0, ''
if stored then
  local v, t = string.match(stored, '^(%d+)|([^|]*)|')
  version, tag = tonumber(v), t
end
if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= version then return {0, version, tag} end
if ARGV[5] ~= '' then
  local allowed = false
  for t in string.gmatch(ARGV[5], '[^\n]+') do
    if stored and t == tag then allowed = true end
  end
  if not allowed then return {0, version, tag} end
end
redis.call('HSET', KEYS[1], ARGV[1], (version + 1) .. '|' .. ARGV[3] .. '|' .. ARGV[2])
return {1, version + 1, ARGV[3]}
