"""recon: per-stage, per-window event loss reconciliation."""

import logging

__version__ = "0.1.0"

# A library logs and leaves where the lines go to the application (the command line
# configures it, `recon.logs`): without a handler of its own, Python's last resort would
# print librdkafka's errors into every notebook.
logging.getLogger(__name__).addHandler(logging.NullHandler())
