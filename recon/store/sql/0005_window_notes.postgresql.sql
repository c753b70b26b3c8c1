-- recon results store, version 5: a window's notes (unreadable rows named by place,
-- Kafka disorder, in flight past the stall, clocks, volume...), as a JSON list of strings.
ALTER TABLE recon_windows ADD COLUMN notes TEXT;
-- The view's * was expanded when it was made: make it again to show the new column.
CREATE OR REPLACE VIEW recon_windows_latest AS
    SELECT * FROM recon_windows WHERE is_latest;
