-- RetryJob: a DEAD or CANCELLED job is READY again, with no attempt used
-- and its place in enqueue order; its idempotency key goes with it unless
-- another unfinished job holds it now. ARGV: job id, max unfinished jobs
-- ('' for no limit). Answers {'ok', queue, type}, {'unknown'},
-- {'wrong', state} or {'full', queue}.
local q, j = find(ARGV[3])
if not q then return {'unknown'} end
if j.s ~= 'dead' and j.s ~= 'cancelled' then return {'wrong', j.s} end
local limit = tonumber(ARGV[4])
if limit and unfinished(q) >= limit then return {'full', q} end
local key = job_key(q, j.id)
redis.call('ZREM', qkey(q, 'f'), j.id)
if j.k then
  if redis.call('HEXISTS', qkey(q, 'k'), j.k) == 1 then
    redis.call('HDEL', key, 'k')
  else
    redis.call('HSET', qkey(q, 'k'), j.k, j.id)
  end
end
redis.call('HSET', key, 'a', 0)
-- A new life: no finish, cancel, progress or result of the last one.
redis.call('HDEL', key, 'ft', 'c', 'gp', 'gm', 'ga', 'gt', 'rs')
make_ready(q, j, now_us())
wake(true, false)
return {'ok', q, j.t}
