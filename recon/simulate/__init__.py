"""A pipeline simulator: plans traffic with planted faults, plants it, states the truth.

It writes into the real servers and states the exact ground truth the
reconciliation must find.
"""
