"""Alerting on breaches: notifiers with state (page once, re-notify, resolve) and metrics."""
