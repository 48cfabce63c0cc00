-- GetJob. ARGV: job id. Answers the job as FIELDS, or {} if unknown.
local q = redis.call('HGET', JOBS, ARGV[3])
if not q or redis.call('EXISTS', job_key(q, ARGV[3])) == 0 then return {} end
return reply(q, ARGV[3])
