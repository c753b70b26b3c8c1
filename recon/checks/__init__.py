"""Threshold gates: Great Expectations suites run on the per-stage metrics."""
