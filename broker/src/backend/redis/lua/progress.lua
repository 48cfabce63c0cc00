-- Progress: the last report of the attempt under a lease, fenced by it;
-- the lease runs on as it was. ARGV: job id, lease id, percent, message.
-- Answers {'ok', cancel requested ('1' or '')}, {'unknown'} or
-- {'stale', state}.
local q, j, refused = leased(ARGV[3], ARGV[4])
if refused then return refused end
redis.call('HSET', job_key(q, j.id), 'gp', ARGV[5], 'gm', ARGV[6], 'ga', j.a, 'gt', int(now_us()))
return {'ok', j.c or ''}
