"""The benchmark itself runs (small), so its truth check, floor and pandas comparison stay true."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent / "bench" / "run_day.py"


def test_bench_day_is_checked_against_the_truth(
    pg_url: str, bootstrap: str, tmp_path: Path
) -> None:
    """24 hours x 2,000 events with every fault planted: recon's 24 windows equal the truth,
    the floor reads find exactly the planted rows (5 ledgers), pandas by hand and recon's
    two-stage run agree on the receipts missing from the lake, and the results section is
    written."""
    results = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--events",
            "48000",
            "--results",
            f"sqlite:///{tmp_path / 'results.sqlite'}",
            "--record",
            str(results),
        ],
        env={**os.environ, "RECON_PG_URL": pg_url, "RECON_KAFKA": bootstrap},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all 24 windows equal the truth" in proc.stdout
    assert "same numbers" in proc.stdout
    section = results.read_text()
    assert "## 48,000 events/day, --jobs 1" in section
    assert "| recon run / read floor |" in section
