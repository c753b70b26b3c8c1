"""The reconciliation algorithm (once, for every source kind) and the window status rules."""
