-- Peek: what the failure policy needs of a leased job. ARGV: job id,
-- lease id. Answers {'ok', attempt, max attempts, cancel requested ('1'
-- or '')}, {'unknown'} or {'stale', state}.
local q, j, refused = leased(ARGV[3], ARGV[4])
if refused then return refused end
return {'ok', j.a, j.m, j.c or ''}
