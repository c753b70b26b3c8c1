-- recon results store, version 5: a window's notes, as a JSON list of strings.
-- (SQLite expands the view's * when it is read: it shows the new column as it is.)
ALTER TABLE recon_windows ADD COLUMN notes TEXT;
