-- Maintain one queue: due scheduled jobs become READY, finished jobs past
-- retention are deleted, and the leases that expired are listed for the
-- failure policy (each then ended by fail.lua, fenced by its lease, so
-- that of brokers maintaining at once one ends it). ARGV: queue, most
-- jobs of each kind. Answers {jobs made ready, then per expired lease:
-- job id, lease id, attempt, max attempts, cancel requested ('1' or '')}.
local q, batch = ARGV[3], tonumber(ARGV[4])
local now = now_us()
local promoted = redis.call('ZRANGEBYSCORE', qkey(q, 's'), '-inf', now, 'LIMIT', 0, batch)
for _, id in ipairs(promoted) do
  local j = load(q, id)
  redis.call('ZREM', qkey(q, 's'), id)
  if j then make_ready(q, j, j.ra) end
end
local out = {#promoted}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', qkey(q, 'l'), '-inf', now, 'LIMIT', 0, batch)) do
  local j = load(q, id)
  if j then
    for _, v in ipairs({id, j.li or '', j.a, j.m, j.c or ''}) do out[#out + 1] = v end
  else
    redis.call('ZREM', qkey(q, 'l'), id)
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', qkey(q, 'f'), '-inf', now - RETENTION_US, 'LIMIT', 0, batch)) do
  local j = load(q, id)
  if j then remove(q, j) else redis.call('ZREM', qkey(q, 'f'), id) end
end
redue(q)
wake(#promoted > 0, false)
return out
