-- ListJobs, one step: the first jobs after a position in enqueue order,
-- of one queue, or of the queues in scope of one SSCAN step (so that many
-- queues never hold Redis for long; the broker merges the steps). ARGV:
-- after (an enqueue position), most jobs, state ('' for any), queue (''
-- for every queue in scope), cursor ('0' first), whether every queue is
-- in scope ('1'), the count of exact queue names and the names, then the
-- count of prefixes and the prefixes. Answers {next cursor ('0' at the
-- end), per job {position, FIELDS...}}, in enqueue order.
local after, most, state, queue, cursor = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local every = ARGV[8] == '1'
local at = 9
local exact = {}
for i = 1, tonumber(ARGV[at]) do exact[ARGV[at + i]] = true end
at = at + tonumber(ARGV[at]) + 1
local prefixes = {}
for i = 1, tonumber(ARGV[at]) do prefixes[i] = ARGV[at + i] end
local function in_scope(q)
  if every or exact[q] then return true end
  for _, p in ipairs(prefixes) do
    if string.sub(q, 1, #p) == p then return true end
  end
  return false
end
local queues, next_cursor = {}, '0'
if queue ~= '' then
  if in_scope(queue) then queues = {queue} end
else
  local step = redis.call('SSCAN', QUEUES, cursor, 'COUNT', 200)
  next_cursor = step[1]
  for _, q in ipairs(step[2]) do
    if in_scope(q) then queues[#queues + 1] = q end
  end
end
local states = STATES
if state ~= '' then states = {state} end
local found = {}
for _, q in ipairs(queues) do
  for _, s in ipairs(states) do
    local page = redis.call('ZRANGEBYSCORE', qkey(q, 'st:' .. s), '(' .. after, '+inf', 'WITHSCORES', 'LIMIT', 0, most)
    for i = 1, #page, 2 do found[#found + 1] = {tonumber(page[i + 1]), q, page[i]} end
  end
end
table.sort(found, function(a, b) return a[1] < b[1] end)
local out = {}
for i = 1, math.min(most, #found) do
  local f = found[i]
  out[#out + 1] = {int(f[1]), reply(f[2], f[3])}
end
return {next_cursor, out}
