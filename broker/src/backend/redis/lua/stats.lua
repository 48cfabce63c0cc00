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
local step = redis.call('SSCAN', QUEUES, cursor, 'COUNT', 500)
local queues = {}
for _, q in ipairs(step[2]) do
  local row = {q, int(redis.call('SISMEMBER', PAUSED, q))}
  if counts then
    local n = redis.call('HMGET', qkey(q, 'n'), unpack(STATES))
    for i = 1, #STATES do row[#row + 1] = n[i] or '0' end
    row[#row + 1] = redis.call('ZRANGE', qkey(q, 'rd'), 0, 0, 'WITHSCORES')[2] or ''
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
