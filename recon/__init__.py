"""recon: per-stage, per-window event loss reconciliation."""

__version__ = "0.1.0"
