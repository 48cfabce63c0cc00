-- Schedule fire: ticks of different schedules, each one's job enqueued
-- and its schedule written, both or neither. ARGV: the call's two, then
-- 19 per tick: enqueue.lua's three (queue, limit, most queues) and one
-- job's eleven, then name, expected revision, revision, next tick in ms (''
-- for none), body. Answers per tick {'stale'} when the schedule is not at
-- that revision (nothing done), else enqueue.lua's answer; the schedule is
-- written only if the job was added or its key already held. enqueue()
-- reads ARGV, so ARGV is set to each tick's enqueue arguments in turn.
local given = {}
for k = 1, #ARGV do given[k] = ARGV[k] end
local results = {}
for i = 3, #given, 19 do
  for k = #ARGV, 3, -1 do ARGV[k] = nil end
  for k = 0, 13 do ARGV[3 + k] = given[i + k] end
  local name, expect = given[i + 14], given[i + 15]
  if not schedule_at(name, expect) then
    results[#results + 1] = {'stale'}
  else
    local out = enqueue()
    local answer = out[1] and out[1][1]
    if answer == 'ok' or answer == 'dup' then
      schedule_write(name, given[i + 16], given[i + 17], given[i + 18])
    end
    results[#results + 1] = out
  end
end
return results
