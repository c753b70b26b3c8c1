"""The read-only dashboard over the results store (`recon dashboard`)."""
