-- Purge a topic's dead letters: count them and delete the DLQ in one step.
-- KEYS[1] dlq stream. Returns how many there were.
local n = redis.call('XLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return n
