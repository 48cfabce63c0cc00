-- Release: gives a leased job back without using an attempt, fenced by
-- the lease: READY in its old place, due after a delay, or CANCELLED if an
-- operator asked for it. ARGV: job id, lease id, delay ms. Answers {'ok',
-- state, queue, type, attempt, worker, broker, stream}, {'unknown'} or
-- {'stale', state}.
local q, j, refused = leased(ARGV[3], ARGV[4])
if refused then return refused end
local delay_ms = tonumber(ARGV[5])
local now = now_us()
end_lease(q, j)
j.a = int(redis.call('HINCRBY', job_key(q, j.id), 'a', -1))
if j.c == '1' then
  finish(q, j, 'cancelled', now, nil)
elseif delay_ms == 0 then
  make_ready(q, j, j.ra)
else
  schedule(q, j, now + delay_ms * 1000)
end
wake(j.s == 'ready', j.s == 'scheduled')
return {'ok', j.s, q, j.t, j.a, j.w or '', j.b or '', j.st or ''}
