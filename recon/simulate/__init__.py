"""A pipeline simulator: plans traffic with planted faults, plants it into real servers,
and states the exact ground truth the reconciliation must find."""
