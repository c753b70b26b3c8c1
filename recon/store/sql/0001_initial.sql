-- recon results store, version 1. Portable SQL: runs on PostgreSQL and SQLite.
-- Every window's write is one transaction; a re-run inserts a new window row and
-- clears is_latest on the old one, so history is kept and readers use the views.

CREATE TABLE recon_runs (
    run_id        VARCHAR(36) PRIMARY KEY,
    pipeline      TEXT NOT NULL,
    range_start   TIMESTAMP WITH TIME ZONE NOT NULL,
    range_end     TIMESTAMP WITH TIME ZONE NOT NULL,
    started_at    TIMESTAMP WITH TIME ZONE NOT NULL,
    finished_at   TIMESTAMP WITH TIME ZONE,
    status        TEXT NOT NULL,
    config_digest TEXT NOT NULL,
    recon_version TEXT NOT NULL
);

CREATE TABLE recon_windows (
    window_id    VARCHAR(36) PRIMARY KEY,
    run_id       VARCHAR(36) NOT NULL REFERENCES recon_runs (run_id),
    pipeline     TEXT NOT NULL,
    window_start TIMESTAMP WITH TIME ZONE NOT NULL,
    window_end   TIMESTAMP WITH TIME ZONE NOT NULL,
    status       TEXT NOT NULL,
    events       BIGINT,
    error        TEXT,
    computed_at  TIMESTAMP WITH TIME ZONE NOT NULL,
    is_latest    BOOLEAN NOT NULL
);
CREATE UNIQUE INDEX recon_windows_one_latest
    ON recon_windows (pipeline, window_start, window_end) WHERE is_latest;
CREATE INDEX recon_windows_by_time ON recon_windows (pipeline, window_start);

CREATE TABLE recon_stage_metrics (
    window_id           VARCHAR(36) NOT NULL REFERENCES recon_windows (window_id),
    position            INTEGER NOT NULL,
    stage               TEXT NOT NULL,
    upstream            BIGINT NOT NULL,
    arrived             BIGINT NOT NULL,
    lost                BIGINT NOT NULL,
    dead_lettered       BIGINT NOT NULL,
    pending             BIGINT NOT NULL,
    unverifiable        BIGINT NOT NULL,
    late                BIGINT NOT NULL,
    duplicates          BIGINT NOT NULL,
    orphans             BIGINT NOT NULL,
    unreadable          BIGINT NOT NULL,
    loss_rate           DOUBLE PRECISION NOT NULL,
    latency_p50_ms      DOUBLE PRECISION,
    latency_p95_ms      DOUBLE PRECISION,
    latency_p99_ms      DOUBLE PRECISION,
    latency_max_ms      DOUBLE PRECISION,
    threshold_loss_rate DOUBLE PRECISION,
    threshold_max_lost  BIGINT,
    breach              BOOLEAN NOT NULL,
    PRIMARY KEY (window_id, stage)
);

-- No foreign key here on purpose: a breached window has ~10^5 missing IDs, and a
-- per-row FK check doubles the COPY time. The rows are written in the same
-- transaction as their recon_windows row, so they cannot dangle.
CREATE TABLE recon_missing_events (
    window_id     VARCHAR(36) NOT NULL,
    stage         TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    origin_time   TIMESTAMP WITH TIME ZONE NOT NULL,
    last_stage    TEXT NOT NULL,
    last_seen_at  TIMESTAMP WITH TIME ZONE,
    last_location TEXT
);
CREATE INDEX recon_missing_by_window ON recon_missing_events (window_id, stage);
CREATE INDEX recon_missing_by_event ON recon_missing_events (event_id);

CREATE TABLE recon_expectation_results (
    window_id   VARCHAR(36) NOT NULL REFERENCES recon_windows (window_id),
    stage       TEXT NOT NULL,
    expectation TEXT NOT NULL,
    column_name TEXT NOT NULL,
    threshold   DOUBLE PRECISION NOT NULL,
    observed    DOUBLE PRECISION,
    success     BOOLEAN NOT NULL
);

CREATE VIEW recon_windows_latest AS
    SELECT * FROM recon_windows WHERE is_latest;

CREATE VIEW recon_stage_metrics_latest AS
    SELECT w.pipeline, w.window_start, w.window_end, w.status, w.run_id, m.*
    FROM recon_stage_metrics m JOIN recon_windows w ON w.window_id = m.window_id
    WHERE w.is_latest;
