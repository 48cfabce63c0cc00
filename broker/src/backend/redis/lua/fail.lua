-- Fail: ends a failed attempt (a Nack, or an expired lease), fenced by the
-- lease, as the failure policy decided ('dead', or 'retry' after a delay);
-- a job an operator asked to cancel is CANCELLED whatever was decided.
-- With a key delay, every job of its key is held back that long first.
-- ARGV: job id, lease id, decision, delay ms, error, key delay ms ('' or
-- 0 for none: an expired lease's failure has none). Answers {'ok', state,
-- next due time in us or '', queue, type, attempt, worker, broker, stream},
-- {'unknown'} or {'stale', state}.
local q, j, refused = leased(ARGV[3], ARGV[4])
if refused then return refused end
local decision, delay_ms, err = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local key_delay_ms = tonumber(ARGV[8] or '0') or 0
local now = now_us()
if j.fk and key_delay_ms > 0 then hold_key(q, j.fk, now + key_delay_ms * 1000) end
end_lease(q, j)
local next_at = ''
if j.c == '1' then
  finish(q, j, 'cancelled', now, err)
else
  local dead = decision == 'dead'
  redis.call('LPUSH', FAILURES, cjson.encode({j.id, q, j.t, tonumber(j.a), err, int(now), dead, j.w or ''}))
  redis.call('LTRIM', FAILURES, 0, FAILURES_KEPT - 1)
  if dead then
    finish(q, j, 'dead', now, err)
  else
    redis.call('HSET', job_key(q, j.id), 'e', err)
    local ra = now + delay_ms * 1000
    if delay_ms == 0 then make_ready(q, j, ra) else schedule(q, j, ra) end
    next_at = int(ra)
    wake(j.s == 'ready', j.s == 'scheduled')
  end
end
return {'ok', j.s, next_at, q, j.t, j.a, j.w or '', j.b or '', j.st or ''}
