-- Sweep: removes the queues that hold no job and are not paused, with
-- their counters, of those the scripts noted as maybe empty (a job
-- deleted, a queue resumed); then says which of the queues this broker
-- counts are gone. ARGV: most queues, then queues this broker counts (a
-- window of them: each sweep checks the next ones).
-- Answers {queues looked at, queues removed, counted queues gone}.
local looked = redis.call('SPOP', EMPTY, tonumber(ARGV[3]))
local removed = {}
for _, q in ipairs(looked) do
  if redis.call('SISMEMBER', PAUSED, q) == 0 and unfinished(q) == 0
      and redis.call('ZCARD', qkey(q, 'f')) == 0 then
    redis.call('SREM', QUEUES, q)
    redis.call('DEL', qkey(q, 'types'), qkey(q, 'k'))
    redis.call('ZREM', DUE, q)
    for i = 0, 4 do redis.call('HDEL', COUNTERS, q .. '|' .. i) end
    removed[#removed + 1] = q
  end
end
local gone = {}
for i = 4, #ARGV do
  if redis.call('SISMEMBER', QUEUES, ARGV[i]) == 0 then gone[#gone + 1] = ARGV[i] end
end
return {#looked, removed, gone}
