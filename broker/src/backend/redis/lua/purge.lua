-- PurgeQueue, one batch: deletes jobs of a queue in a state (not LEASED)
-- enqueued up to a horizon, so that jobs enqueued during a purge are
-- spared. ARGV: queue, state, horizon ('': now), most jobs. Answers
-- {'ok', deleted, horizon} or {'unknown'}.
local q, state = ARGV[3], ARGV[4]
if redis.call('SISMEMBER', QUEUES, q) == 0 then return {'unknown'} end
local horizon = ARGV[5]
if horizon == '' then horizon = redis.call('GET', SEQ) or '0' end
local ids = redis.call('ZRANGEBYSCORE', qkey(q, 'st:' .. state), '-inf', horizon, 'LIMIT', 0, tonumber(ARGV[6]))
for _, id in ipairs(ids) do
  local j = load(q, id)
  if j then remove(q, j) else redis.call('ZREM', qkey(q, 'st:' .. state), id) end
end
redue(q)
return {'ok', #ids, horizon}
