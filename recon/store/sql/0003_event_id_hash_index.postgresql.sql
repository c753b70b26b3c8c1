-- recon results store, version 3 (PostgreSQL): the look-up of missing events by ID uses
-- a hash index. A btree entry holds the whole key, and one row's entry must fit in a
-- third of a page (2704 bytes after compression): a single origin event ID longer than
-- that failed its window's COPY ("index row requires 10016 bytes"), so the window was
-- never stored and no alert was sent. Event IDs are whatever a source accepts, so
-- anyone who can send one could suppress loss reporting that way. A hash index entry
-- is a 4-byte hash whatever the ID's length, and it serves the only look-up by ID
-- there is, exact equality (event_id = $1), unchanged: no reader needs to change.
-- Built in the upgrade's transaction: writers wait for the build on a large table.

DROP INDEX recon_missing_by_event;
CREATE INDEX recon_missing_by_event ON recon_missing_events USING hash (event_id);
