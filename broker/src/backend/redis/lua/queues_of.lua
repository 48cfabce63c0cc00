-- Queues of: the queue of each job id of ARGV ('' if unknown).
local out = {}
for i = 3, #ARGV do out[#out + 1] = redis.call('HGET', JOBS, ARGV[i]) or '' end
return out
