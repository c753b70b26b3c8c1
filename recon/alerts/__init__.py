"""Alerting on breaches: channels with state (page once, re-notify, resolve) and metrics."""
