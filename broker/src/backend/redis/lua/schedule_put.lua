-- Schedule put or delete, if the schedule is at the revision expected.
-- ARGV: name, expected revision ('' for absent, '*' for any: a delete),
-- then for a put: revision, next tick in ms ('' for none), body. Answers 1
-- if done, 0 if not.
local name, expect = ARGV[3], ARGV[4]
if expect ~= '*' and not schedule_at(name, expect) then return 0 end
if ARGV[5] then
  schedule_write(name, ARGV[5], ARGV[6], ARGV[7])
  return 1
end
redis.call('ZREM', SCHEDULES_DUE, name)
redis.call('SREM', SCHEDULES, name)
return redis.call('DEL', schedule_key(name))
