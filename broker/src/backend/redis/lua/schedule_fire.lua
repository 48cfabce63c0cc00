-- Schedule fire: one tick's job enqueued and its schedule written, both
-- or neither. ARGV: enqueue.lua's (queue, limit, most queues, one job's
-- nine), then name, expected revision, revision, next tick in ms ('' for
-- none), body. Answers {'stale'} when the schedule is not at that
-- revision (nothing done), else enqueue.lua's answer; the schedule is
-- written only if the job was added or its key already held.
local body = table.remove(ARGV)
local next_tick = table.remove(ARGV)
local revision = table.remove(ARGV)
local expect = table.remove(ARGV)
local name = table.remove(ARGV)
if not schedule_at(name, expect) then return {'stale'} end
local out = enqueue()
local answer = out[1] and out[1][1]
if answer == 'ok' or answer == 'dup' then
  schedule_write(name, revision, next_tick, body)
end
return out
