-- Held: the "stream:job" entries of the jobs leased to this broker's
-- streams.
return redis.call('SMEMBERS', held_key(ME))
