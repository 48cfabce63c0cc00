-- PauseQueue and ResumeQueue. ARGV: queue, '1' to pause or '0' to resume.
local q = ARGV[3]
if ARGV[4] == '1' then
  redis.call('SADD', QUEUES, q)
  redis.call('SADD', PAUSED, q)
else
  redis.call('SREM', PAUSED, q)
  maybe_empty(q)
  wake(true, false)
end
return 'ok'
