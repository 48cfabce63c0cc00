-- Release: gives a leased job back without using an attempt, fenced by
-- the lease: READY in its old place, due after a delay, or CANCELLED if an
-- operator asked for it; with a key delay, every job of its key is held
-- back that long first. ARGV: job id, lease id, delay ms, key delay ms.
-- Answers {'ok',
-- state, queue, type, attempt, worker, broker, stream}, {'unknown'} or
-- {'stale', state}.
local q, j, refused = leased(ARGV[3], ARGV[4])
if refused then return refused end
local delay_ms, key_delay_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_us()
if j.fk and key_delay_ms > 0 then hold_key(q, j.fk, now + key_delay_ms * 1000) end
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
