-- recon results store, version 2: alert state, one row per (pipeline, stage).
-- A breach pages once; it re-notifies after the configured interval while it
-- lasts, and sends one resolve when a run finds the stage back under threshold.

CREATE TABLE recon_alert_state (
    pipeline         TEXT NOT NULL,
    stage            TEXT NOT NULL,
    firing           BOOLEAN NOT NULL,
    opened_at        TIMESTAMP WITH TIME ZONE,
    last_notified_at TIMESTAMP WITH TIME ZONE,
    resolved_at      TIMESTAMP WITH TIME ZONE,
    last_window_id   VARCHAR(36),
    PRIMARY KEY (pipeline, stage)
);
