"""The investigation notebook, executed end to end (nbclient) against a planted pipeline."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient

from recon.cli import main
from recon.simulate.plant import Targets, pipeline_config, plant
from recon.simulate.scenario import Scenario, plan

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "investigate.ipynb"
START = datetime(2026, 11, 27, tzinfo=UTC)
NOW = "2026-11-27T12:00:00Z"


def test_notebook_runs_with_parameters(pg_url, bootstrap, unique, tmp_path: Path) -> None:
    """3 hours x 400 events; hour 1 loses 10 % at the lake (40 events) and dead-letters 2,
    stored by `recon run`. The notebook, parameterised for hour 1 and the lake, reads the
    stored results: the lake breached and Kafka did not, 40 lost, 42 missing (all on the
    lake loader's partitions), 3 windows charted; it traces a lost event to "lost at lake",
    and prints nothing from the client libraries."""
    targets = Targets(pg_url, bootstrap, tmp_path / "lake", unique)
    plant(
        plan(
            Scenario(
                start=START,
                hours=3,
                events_per_hour=400,
                seed=41,
                lake_loss=lambda h: 0.1 if h == 1 else 0.0,
                dead_letters_per_hour=2,
            )
        ),
        targets,
    )
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(targets)))
    run = ["run", "--config", str(config), "--start", START.isoformat(), "--now", NOW]
    assert main([*run, "--end", (START + timedelta(hours=3)).isoformat(), "--quiet"]) == 1
    nb = nbformat.read(NOTEBOOK, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    # As papermill does: the injected values go in a cell right after the defaults.
    injected = nbformat.v4.new_code_cell(
        f"config = {str(config)!r}\n"
        f"window_start = {(START + timedelta(hours=1, minutes=20)).isoformat()!r}\n"
        "stage = 'lake'\n"
    )
    nb.cells.insert(index + 1, injected)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    line = next(
        line for text in outputs for line in text.splitlines() if line.startswith("SUMMARY ")
    )
    summary = json.loads(line.removeprefix("SUMMARY "))
    assert summary["stage"] == "lake"
    assert summary["breach"] == {"kafka": False, "lake": True, "end_to_end": True}
    assert (summary["lost"], summary["missing"], summary["windows"]) == (40, 42, 3)
    assert summary["by_partition"] == 42
    assert summary["verdict"] == f"{summary['traced']}: lost at lake"
    streams = [o for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert streams == []
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 1
