-- Sluice on PostgreSQL, schema version 3: source groups.
--
-- One row per member or partition of a source group (a Kafka bridge's
-- consumers); the body is the broker's, never read by SQL. Puts name the
-- revision they read; a commit locks its row, checks its epoch and
-- position, and inserts the jobs and moves the position in one
-- transaction.

CREATE TABLE sluice_source_rows (
    grp      text   NOT NULL,
    key      text   NOT NULL,
    revision bigint NOT NULL,
    epoch    bigint NOT NULL,
    -- The next record's offset; NULL before the first commit.
    position bigint,
    body     bytea  NOT NULL,
    PRIMARY KEY (grp, key)
);
