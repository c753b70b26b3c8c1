-- recon results store, version 4: alert delivery state per route.
-- One incident per (pipeline, stage); each route (a PagerDuty service, a Slack channel,
-- a webhook) keeps what it was last told, so a route that failed is retried alone and a
-- healthy one is not paged twice. `route` is the route's kind and a hash of its target.
-- recon_alert_state (version 2) is read for a route without a row of its own here.

CREATE TABLE recon_alert_delivery (
    pipeline         TEXT NOT NULL,
    stage            TEXT NOT NULL,
    route            VARCHAR(80) NOT NULL,
    firing           BOOLEAN NOT NULL,
    opened_at        TIMESTAMP WITH TIME ZONE,
    last_notified_at TIMESTAMP WITH TIME ZONE,
    resolved_at      TIMESTAMP WITH TIME ZONE,
    last_window_id   VARCHAR(36),
    PRIMARY KEY (pipeline, stage, route)
);
