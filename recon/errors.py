"""One error hierarchy; each error carries the exit code the CLI returns.

"The data is bad" (a breach) is a result, not an error. These are for runs
that cannot produce a trustworthy number at all.
"""


class ReconError(Exception):
    """Base of every error recon reports to the user; `exit_code` is the CLI's."""

    exit_code = 3


class ConfigError(ReconError):
    """Bad usage or configuration: names the file and key."""

    exit_code = 2


class SourceError(ReconError):
    """A stage's ledger could not be read: names the source and what failed."""

    exit_code = 3


class StoreError(ReconError):
    """The results store could not be reached or written."""

    exit_code = 3
