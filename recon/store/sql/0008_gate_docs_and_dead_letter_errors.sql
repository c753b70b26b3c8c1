-- recon results store, version 8: what the Great Expectations gate and the dead letters add.
-- A run's Data Docs: the index page GX built for its validations (NULL: none were built).
ALTER TABLE recon_runs ADD COLUMN data_docs TEXT;
-- An expectation the user added to the suite carries its name (recon's own have none).
ALTER TABLE recon_expectation_results ADD COLUMN name TEXT;
-- A window's dead-lettered events per stage, counted by the error their dead letters carry.
CREATE TABLE recon_dead_letter_errors (
    window_id   VARCHAR(36) NOT NULL REFERENCES recon_windows (window_id),
    stage       TEXT NOT NULL,
    error       TEXT NOT NULL,
    events      BIGINT NOT NULL
);
CREATE INDEX recon_dead_letter_errors_by_window ON recon_dead_letter_errors (window_id);
