-- recon results store, version 7: per window and Kafka stage read with a schema
-- registry, the messages of each schema ID (stamped in the window, readable or not;
-- the first and last by record time), the window's events that carried it, how many
-- of them are lost at the next hop, and whether the ID is new (first_seen; NULL when
-- no earlier window of the stage is known). docs/semantics.md states the rules.
CREATE TABLE recon_window_schema_ids (
    window_id       VARCHAR(36) NOT NULL REFERENCES recon_windows (window_id),
    stage           TEXT NOT NULL,
    topic           TEXT NOT NULL,
    schema_id       BIGINT NOT NULL,
    messages        BIGINT NOT NULL,
    first_time      TIMESTAMP WITH TIME ZONE,
    first_partition INTEGER,
    first_offset    BIGINT,
    last_time       TIMESTAMP WITH TIME ZONE,
    last_partition  INTEGER,
    last_offset     BIGINT,
    events          BIGINT NOT NULL,
    next_stage      TEXT,
    lost_next       BIGINT NOT NULL,
    first_seen      BOOLEAN,
    PRIMARY KEY (window_id, stage, schema_id)
);
