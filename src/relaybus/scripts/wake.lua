-- Shared by the scripts that make entries readable: the topic's wake-up (docs/consuming.md).
-- A consumer that found nothing new sets the topic's wake key (atomically with that
-- read); whatever makes a new entry readable afterwards deletes it and, if it was set,
-- publishes on the channel of the same name, which every waiting consumer subscribed
-- to before it read. One message per idle-to-busy change, none while consumers are busy.

local function ring(wake)
  if redis.call('DEL', wake) == 1 then
    redis.call('PUBLISH', wake, '1')
  end
end
