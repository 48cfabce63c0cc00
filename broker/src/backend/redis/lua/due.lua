-- Due: what the maintenance loop does next. ARGV: most queues. Answers
-- {now in us, the next deadline of any queue in us or '', the queues whose
-- deadline has come}.
local now = now_us()
local next_at = redis.call('ZRANGE', DUE, 0, 0, 'WITHSCORES')[2] or ''
return {int(now), next_at, redis.call('ZRANGEBYSCORE', DUE, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))}
