-- Claim: leases up to `credit` ready jobs of the queues given (paused ones
-- left out) to a stream of this broker, in the contract's order: priority,
-- then due time, then enqueue order. ARGV: stream, worker, lease ms,
-- credit, the count of queues and the queues, the count of job types and
-- the types (none: any), then a lease id per job that may be claimed.
-- Answers each job claimed, as FIELDS.
DEFER = true
local stream, worker, lease_ms, credit = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local at = 7
local queues = {}
for i = 1, tonumber(ARGV[at]) do queues[i] = ARGV[at + i] end
at = at + #queues + 1
local types = {}
for i = 1, tonumber(ARGV[at]) do types[i] = ARGV[at + i] end
at = at + #types + 1
local candidates, lists = {}, 0
for _, q in ipairs(queues) do
  if redis.call('SISMEMBER', PAUSED, q) == 0 then
    local of_queue = types
    if #of_queue == 0 then of_queue = redis.call('SMEMBERS', qkey(q, 'types')) end
    for _, t in ipairs(of_queue) do
      local head = redis.call('ZRANGE', ready_key(q, t), 0, credit - 1, 'WITHSCORES')
      if #head > 0 then lists = lists + 1 end
      for i = 1, #head, 2 do
        candidates[#candidates + 1] = {tonumber(head[i + 1]), head[i], q, t}
      end
    end
  end
end
-- One type's set comes in order already; several are merged.
if lists > 1 then
  table.sort(candidates, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
end
local now = now_us()
local expires = int(now + lease_ms * 1000)
local out, queues_touched, types_touched = {}, {}, {}
for i = 1, math.min(credit, #candidates) do
  local member, q, t = candidates[i][2], candidates[i][3], candidates[i][4]
  local id = string.sub(member, 33)
  local key = job_key(q, id)
  -- The reply, read once and then given the lease.
  local job = redis.call('HMGET', key, unpack(FIELDS))
  local lease, attempt = ARGV[at + i - 1], int(tonumber(job[FIELD_AT.a]) + 1)
  write('ZREM', ready_key(q, t), member)
  write('ZREM', qkey(q, 'st:ready'), id)
  write('ZADD', qkey(q, 'st:leased'), job[FIELD_AT.sq], id)
  redis.call('HSET', key, 's', 'leased', 'a', attempt, 'li', lease, 'w', worker, 'b', ME,
    'st', stream, 'lm', lease_ms, 'le', expires)
  write('ZADD', qkey(q, 'l'), expires, id)
  write('SADD', held_key(ME), stream .. ':' .. id)
  job[FIELD_AT.s], job[FIELD_AT.a] = 'leased', attempt
  job[FIELD_AT.li], job[FIELD_AT.w], job[FIELD_AT.le] = lease, worker, expires
  queues_touched[q] = true
  types_touched[q .. '\0' .. t] = {q, t}
  out[#out + 1] = job
end
flush()
for _, qt in pairs(types_touched) do drop_type_if_empty(qt[1], qt[2]) end
for q in pairs(queues_touched) do due_at(q, expires) end
return out
