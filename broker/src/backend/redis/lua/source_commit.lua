-- Source commit: a partition's jobs enqueued one by one until one is
-- refused, and its row's position moved past those taken, if the row has
-- the epoch and position expected; all in this one script. ARGV: the
-- call's two, then group, key, epoch, expected position ('' for none),
-- the position once all are taken, the job count n, n offsets, then
-- enqueue.lua's three (queue, limit, most queues) and eleven per job.
-- Answers {'stale'}, or {'done', position, answers} with enqueue.lua's
-- answer of each job offered. enqueue() reads ARGV, so ARGV is set to one
-- job's enqueue arguments in turn.
local given = {}
for k = 1, #ARGV do given[k] = ARGV[k] end
local group, key, epoch, from, to = given[3], given[4], given[5], given[6], given[7]
local n = tonumber(given[8])
local rk = source_key(group, key)
local row = redis.call('HMGET', rk, 'e', 'p')
if not row[1] or row[1] ~= epoch or (row[2] or '') ~= from then return {'stale'} end
local base = 9 + n
local answers = {}
local position = to
for j = 1, n do
  for k = #ARGV, 3, -1 do ARGV[k] = nil end
  ARGV[3], ARGV[4], ARGV[5] = given[base], given[base + 1], given[base + 2]
  local at = base + 3 + (j - 1) * 11
  for k = 0, 10 do ARGV[6 + k] = given[at + k] end
  local out = enqueue()
  answers[#answers + 1] = out[1]
  if out[1][1] ~= 'ok' and out[1][1] ~= 'dup' then
    position = given[8 + j]
    break
  end
end
redis.call('HSET', rk, 'p', position)
return {'done', position, answers}
