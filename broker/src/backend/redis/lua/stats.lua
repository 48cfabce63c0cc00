-- Stats, one step over the queues (SSCAN, so that many queues never hold
-- Redis for long): their figures. ARGV: cursor ('0' first), whether to
-- count jobs by state and read the failed attempts ('1'; the rate sampler
-- needs only the counters), how many failed attempts. Answers {next
-- cursor ('0' at the end), now in us, per queue {queue, paused ('1' or
-- '0'), the six counts, oldest ready due time in us or ''}, then on the
-- first step only: the counters of brokers gone as "queue|i" and value
-- pairs, other brokers' counters (JSON each), the last failed attempts
-- (JSON each, newest first)}.
local cursor, counts = ARGV[3], ARGV[4] == '1'

-- The earliest due time of queue q's ready jobs ('' for none): a type's
-- set is ordered by priority first, so the head of each priority band is
-- read (the first 64 bands of each type: beyond that many distinct
-- priorities among ready jobs the figure may be later than the truth).
-- Under flow control, each lane of a type is such a set.
local function oldest_ready(q)
  local best
  local sets = {}
  for _, t in ipairs(redis.call('SMEMBERS', qkey(q, 'types'))) do
    sets[#sets + 1] = ready_key(q, t)
    if flowed(q) then
      for _, lane in ipairs(redis.call('ZRANGE', ring_key(q, t), 0, -1)) do
        if lane ~= '' then sets[#sets + 1] = lane_key(q, t, lane) end
      end
    end
  end
  for _, key in ipairs(sets) do
    local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local bands = 0
    while head[1] and bands < 64 do
      local ra = tonumber(string.sub(head[1], 1, 16))
      if not best or ra < best then best = ra end
      bands = bands + 1
      head = redis.call('ZRANGEBYSCORE', key, '(' .. head[2], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    end
  end
  if best then return int(best) end
  return ''
end
local step = redis.call('SSCAN', QUEUES, cursor, 'COUNT', 500)
local queues = {}
for _, q in ipairs(step[2]) do
  local row = {q, int(redis.call('SISMEMBER', PAUSED, q))}
  if counts then
    for _, state in ipairs(STATES) do row[#row + 1] = count(q, state) end
    -- (row[4] is the ready count.)
    if row[4] > 0 then row[#row + 1] = oldest_ready(q) else row[#row + 1] = '' end
  end
  queues[#queues + 1] = row
end
local gone, others, failures = {}, {}, {}
if cursor == '0' then
  gone = redis.call('HGETALL', COUNTERS)
  for _, b in ipairs(redis.call('SMEMBERS', BROKERS)) do
    if b ~= ME then others[#others + 1] = redis.call('GET', counters_key(b)) or '{}' end
  end
  if counts then failures = redis.call('LRANGE', FAILURES, 0, tonumber(ARGV[5]) - 1) end
end
return {step[1], int(now_us()), queues, gone, others, failures}
