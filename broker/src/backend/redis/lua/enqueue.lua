-- Enqueue: the jobs of one queue. ARGV: queue, max unfinished jobs ('' for
-- no limit), most queues, then eleven per job: id, type, payload, headers,
-- priority, max attempts, timeout ms, due time in us ('' for now),
-- idempotency key ('' for none), dead-letter reason ('' for a runnable
-- job; else the job arrives DEAD with it, holding no key and taking no
-- room), flow-control key ('' for none). Answers per job: {'ok', id, state}, {'dup', id of the job
-- holding the key}, {'full'} or {'queues'}.
DEFER = true
local q, limit, max_queues = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}
if redis.call('SISMEMBER', QUEUES, q) == 0 then
  if redis.call('SCARD', QUEUES) >= max_queues then
    for i = 6, #ARGV, 11 do out[#out + 1] = {'queues'} end
    return out
  end
  redis.call('SADD', QUEUES, q)
end
local now = now_us()
local held = unfinished(q)
local ready, scheduled = false, false
-- One enqueue position per job offered, taken at once.
local jobs = (#ARGV - 5) / 11
local seq = redis.call('INCRBY', SEQ, jobs) - jobs
local seen = {}
for i = 6, #ARGV, 11 do
  seq = seq + 1
  local id, key, dead, fk = ARGV[i], ARGV[i + 8], ARGV[i + 9], ARGV[i + 10]
  if dead ~= '' then key = '' end
  local holder = key ~= '' and redis.call('HGET', qkey(q, 'k'), key)
  if holder then
    out[#out + 1] = {'dup', holder}
  elseif dead ~= '' then
    local j = {id = id, t = ARGV[i + 1], pr = ARGV[i + 4], sq = int(seq)}
    move(q, j, 'dead', {'id', id, 'q', q, 't', j.t, 'p', ARGV[i + 2], 'h', ARGV[i + 3],
      'pr', j.pr, 'a', 0, 'm', ARGV[i + 5], 'to', ARGV[i + 6], 'ct', int(now), 'sq', j.sq,
      'ra', int(now), 'ft', int(now), 'e', dead})
    if fk ~= '' then redis.call('HSET', job_key(q, id), 'fk', fk) end
    write('HSET', JOBS, id, q)
    write('ZADD', qkey(q, 'f'), now, id)
    due_at(q, now + RETENTION_US)
    out[#out + 1] = {'ok', id, 'dead'}
  elseif limit and held >= limit then
    out[#out + 1] = {'full'}
  else
    local due = tonumber(ARGV[i + 7])
    local ra = now
    if due and due > now then ra = due end
    local j = {id = id, t = ARGV[i + 1], pr = ARGV[i + 4], sq = int(seq)}
    local fields = {'id', id, 'q', q, 't', j.t, 'p', ARGV[i + 2], 'h', ARGV[i + 3],
      'pr', j.pr, 'a', 0, 'm', ARGV[i + 5], 'to', ARGV[i + 6], 'ct', int(now), 'sq', j.sq}
    if fk ~= '' then
      j.fk = fk
      fields[#fields + 1] = 'fk'
      fields[#fields + 1] = fk
    end
    if key ~= '' then
      j.k = key
      fields[#fields + 1] = 'k'
      fields[#fields + 1] = key
      redis.call('HSET', qkey(q, 'k'), key, id)
    end
    write('HSET', JOBS, id, q)
    if ra > now then
      schedule(q, j, ra, fields)
      scheduled = true
    else
      make_ready(q, j, ra, fields, seen)
      ready = true
    end
    held = held + 1
    out[#out + 1] = {'ok', id, j.s}
  end
end
flush()
wake(ready, scheduled)
return out
