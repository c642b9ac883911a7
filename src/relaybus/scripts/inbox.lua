-- A requester claims its reply inbox: made (empty) when missing - a reply never makes
-- it (XADD NOMKSTREAM) - and set to expire in ARGV[1] ms, whatever was set before: the
-- requester alone decides how long its inbox lives.
-- KEYS[1] the inbox stream; ARGV[1] time to live (ms)
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XADD', KEYS[1], 'MAXLEN', '0', '*', 'v', '0')
end
return redis.call('PEXPIRE', KEYS[1], ARGV[1])
