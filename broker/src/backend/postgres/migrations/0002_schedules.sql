-- Sluice on PostgreSQL, schema version 2: schedules.
--
-- One row per schedule; the body (the definition and its state) is the
-- broker's, never read by SQL. Every write names the revision it read.

CREATE TABLE sluice_schedules (
    name      text   PRIMARY KEY,
    revision  bigint NOT NULL,
    -- When the schedule is next due (ms since the epoch, UTC); NULL while
    -- paused or once ended.
    next_fire bigint,
    body      bytea  NOT NULL
);

-- The firing loop reads due schedules in order of next tick.
CREATE INDEX sluice_schedules_due ON sluice_schedules (next_fire)
    WHERE next_fire IS NOT NULL;
