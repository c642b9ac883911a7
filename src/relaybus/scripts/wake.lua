-- Shared by the scripts that make entries readable: the topic's wake-up (docs/consuming.md).
-- A consumer that found nothing new sets the topic's wake key (atomically with that
-- read); whatever makes a new entry readable afterwards deletes it and, if it was set,
-- publishes on the channel of the same name, which every waiting consumer subscribed
-- to before it read. One message per idle-to-busy change, none while consumers are busy.
-- Scripts ring after they write: under maxmemory with noeviction Redis checks memory at a
-- script's first write only, and a ring (DEL) first would let everything after it through.
-- The message reaches subscribers only after the script, so its place makes no race.

local function ring(wake)
  if redis.call('DEL', wake) == 1 then
    redis.call('PUBLISH', wake, '1')
  end
end

-- Set the wake key; false when Redis refuses the write (memory full under noeviction):
-- the caller then cannot wait for a ring and must look again by itself.
local function arm(wake)
  return not redis.pcall('SET', wake, '1')['err']
end
