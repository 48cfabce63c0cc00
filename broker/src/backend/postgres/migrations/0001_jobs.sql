-- Sluice on PostgreSQL, schema version 1.
--
-- Unfinished jobs (SCHEDULED, READY, LEASED) live in sluice_jobs, finished
-- ones (SUCCEEDED, DEAD, CANCELLED) in sluice_finished: the table that
-- claims scan stays as small as the backlog, and the history's churn
-- (retention deletes) never leaves dead tuples in the claim index.

CREATE TABLE sluice_jobs (
    -- Time-ordered (UUIDv7): the key index grows at its right edge.
    id               uuid        PRIMARY KEY,
    -- Enqueue order (the last key of the claim order) and ListJobs' token.
    seq              bigint      GENERATED ALWAYS AS IDENTITY,
    queue            text        NOT NULL,
    job_type         text        NOT NULL,
    payload          bytea       NOT NULL,
    headers          jsonb       NOT NULL DEFAULT '{}',
    priority         integer     NOT NULL,
    state            text        NOT NULL CHECK (state IN ('scheduled', 'ready', 'leased')),
    attempt          integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL,
    timeout_ms       bigint      NOT NULL,
    idempotency_key  text,
    cancel_requested boolean     NOT NULL DEFAULT false,
    last_error       text,
    created_at       timestamptz NOT NULL,
    -- When the job is (or was) due: the database's clock decides.
    run_at           timestamptz NOT NULL,
    lease_id         uuid,
    worker_id        text,
    -- The Lease stream holding it: its broker and the stream's number there.
    broker_id        uuid,
    stream_id        bigint,
    leased_at        timestamptz,
    lease_expires_at timestamptz,
    lease_ms         bigint
);

-- Claims: the ready jobs of a queue in the contract's order.
CREATE INDEX sluice_jobs_ready ON sluice_jobs (queue, priority DESC, run_at, seq)
    WHERE state = 'ready';
-- Promotion of scheduled jobs when due.
CREATE INDEX sluice_jobs_scheduled ON sluice_jobs (run_at) WHERE state = 'scheduled';
-- Expiry of leases.
CREATE INDEX sluice_jobs_leased ON sluice_jobs (lease_expires_at) WHERE state = 'leased';
-- An idempotency key is unique per queue among unfinished jobs: exactly
-- the rows of this table.
CREATE UNIQUE INDEX sluice_jobs_idempotency ON sluice_jobs (queue, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- A queue table churns: every job is inserted, updated once or twice and
-- deleted within seconds. Vacuum it by row count, not by a fraction of its
-- size, and without sleeping, so that dead tuples (at the head of the claim
-- index above all) are gone before they slow the claims; leave room in each
-- page for the updates to stay on it.
ALTER TABLE sluice_jobs SET (
    fillfactor = 80,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 50000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

CREATE TABLE sluice_finished (
    id               uuid        PRIMARY KEY,
    seq              bigint      NOT NULL,
    queue            text        NOT NULL,
    job_type         text        NOT NULL,
    payload          bytea       NOT NULL,
    headers          jsonb       NOT NULL,
    priority         integer     NOT NULL,
    state            text        NOT NULL CHECK (state IN ('succeeded', 'dead', 'cancelled')),
    attempt          integer     NOT NULL,
    max_attempts     integer     NOT NULL,
    timeout_ms       bigint      NOT NULL,
    idempotency_key  text,
    last_error       text,
    created_at       timestamptz NOT NULL,
    run_at           timestamptz NOT NULL,
    worker_id        text,
    finished_at      timestamptz NOT NULL
);
-- Retention deletes the oldest first. Nothing else is indexed: every index
-- costs each acknowledged job a write, and ListJobs and Stats read history
-- rarely.
CREATE INDEX sluice_finished_retention ON sluice_finished (finished_at);
-- Appended to, and deleted from at the old end by retention.
ALTER TABLE sluice_finished SET (autovacuum_vacuum_cost_delay = 0);

-- Paused queues: a claim skips them.
CREATE TABLE sluice_paused (
    queue text PRIMARY KEY
);

-- Queues ever seen (Stats lists them; PurgeQueue knows them).
CREATE TABLE sluice_queues (
    queue text PRIMARY KEY
);

-- Failed attempts, newest last; trimmed to the last few hundred.
CREATE TABLE sluice_failures (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id    uuid        NOT NULL,
    queue     text        NOT NULL,
    job_type  text        NOT NULL,
    attempt   integer     NOT NULL,
    error     text        NOT NULL,
    failed_at timestamptz NOT NULL,
    dead      boolean     NOT NULL,
    worker_id text        NOT NULL
);

-- Live brokers: each refreshes its row; one whose heartbeat stopped is
-- forgotten with its streams.
CREATE TABLE sluice_brokers (
    broker_id  uuid        PRIMARY KEY,
    heartbeat  timestamptz NOT NULL,
    -- Its open Lease streams, as ListWorkers shows them (a JSON array).
    streams    jsonb       NOT NULL DEFAULT '[]',
    -- Its lifetime counters per queue (a JSON object), summed by Stats.
    counters   jsonb       NOT NULL DEFAULT '{}'
);

-- Counters of brokers that are gone, folded in when they are forgotten.
CREATE TABLE sluice_counters (
    queue    text   PRIMARY KEY,
    enqueued bigint NOT NULL DEFAULT 0,
    acked    bigint NOT NULL DEFAULT 0,
    nacked   bigint NOT NULL DEFAULT 0,
    expired  bigint NOT NULL DEFAULT 0,
    dead     bigint NOT NULL DEFAULT 0
);
