"""The results store: runs, per-window per-stage metrics, missing IDs, expectation results."""

from recon.store.results import ResultStore, store_url

__all__ = ["ResultStore", "store_url"]
