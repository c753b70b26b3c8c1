-- recon results store, version 6: a run's heartbeat. A run beats each time it stores a
-- window; one still `running` whose heartbeat is older than an hour was killed (a crash,
-- SIGKILL, a lost machine) and is marked `abandoned` by the next run of its pipeline.
ALTER TABLE recon_runs ADD COLUMN heartbeat_at TIMESTAMP WITH TIME ZONE;
