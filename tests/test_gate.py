"""The expectations gate: the user's expectations beside recon's, a GX Checkpoint, Data Docs,
dead letters counted by their error, and no suite written where no config put one."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from wsgiref.simple_server import make_server

import pyarrow as pa
import pytest
import yaml

from recon.checks.expectations import Gate, ensure_suite, suite_path
from recon.cli import main
from recon.config import PipelineConfig, load_config, parse_config
from recon.engine.dead_letters import NO_ERROR_HEADER
from recon.errors import ConfigError
from recon.model import Computed, StageMetrics, Window
from recon.simulate.plant import Targets, pipeline_config, plant
from recon.simulate.scenario import Scenario, plan
from recon.store import ResultStore
from recon.web.app import Dashboard

from .test_dashboard import ARTIFACTS, CHROMIUM, FLAGS

START = datetime(2026, 11, 21, tzinfo=UTC)
NOW = "2026-11-21T12:00:00Z"  # every window settled
SCHEMA = "SerializationError: unknown schema id 42"
TIMEOUT = "TimeoutError: schema registry unreachable"
# The dead letters' error headers, three an hour in time order ("" is an empty header).
ERRORS = [SCHEMA, SCHEMA, TIMEOUT, SCHEMA, SCHEMA, TIMEOUT, SCHEMA, "", ""]


def _at_most(column: str, limit: float, stage: str, name: str | None = None) -> dict:
    condition = {"type": "comparison", "column": {"name": "stage"}, "operator": "==",
                 "parameter": stage}  # fmt: skip
    return {
        "type": "expect_column_values_to_be_between",
        "kwargs": {"column": column, "max_value": limit, "row_condition": condition},
        "meta": {"name": name} if name else {},
    }


USER = [
    _at_most("lost", 10, "lake", "lake loses at most 10 an hour"),
    _at_most("latency_p99_ms", 2000, "kafka"),  # unnamed: named by type, column and bound
    {
        "type": "expect_column_max_to_be_between",
        "kwargs": {"column": "dead_lettered", "max_value": 3},
    },
]


@pytest.fixture
def gated(
    pg_url: str, bootstrap: str, unique: str, tmp_path: Path, capsys
) -> tuple[Path, int, str, str]:
    """3 hours x 400 events; hour 1 loses round(0.05 x 400) = 20 at the lake, under the
    config's loss_rate 0.5. 3 dead letters an hour carrying ERRORS. The suite holds USER
    beside recon's. Returns the config, `recon run`'s exit code and output, the pipeline."""
    p = plan(
        Scenario(
            start=START,
            hours=3,
            events_per_hour=400,
            partitions=2,
            seed=5,
            lake_loss=lambda h: 0.05 if h == 1 else 0.0,
            dead_letters_per_hour=3,
        )
    )
    dead = p.dead_letters.set_column(2, "error", pa.array(ERRORS, pa.string()))
    targets = Targets(pg_url, bootstrap, tmp_path / "lake", unique)
    plant(dataclasses.replace(p, dead_letters=dead), targets)
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline_config(targets, thresholds={"loss_rate": 0.5})))
    suite = tmp_path / "expectations" / f"{unique}.json"
    suite.parent.mkdir()
    suite.write_text(json.dumps({"name": f"recon.{unique}", "expectations": USER}))
    end = (START + timedelta(hours=3)).isoformat()
    code = main(["run", "--config", str(config), "--start", START.isoformat(), "--end", end,
                 "--now", NOW, "--json", str(tmp_path / "run.json")])  # fmt: skip
    return config, code, capsys.readouterr().out, unique


def test_a_users_failed_expectation_breaches_its_window_by_name(gated) -> None:
    """Hour 1's 20 lost at the lake pass recon's loss_rate 0.5 but fail the user's "lake
    loses at most 10 an hour": that window alone is a breach (exit 1), its lake flagged, the
    note and the stored outcome naming the expectation with its observed 20. The unnamed p99
    expectation and the per-window max of dead letters (3 <= 3) pass in all 3 windows. Then
    `recon expectations --write` keeps the 3 expectations of the user's."""
    config, code, out, pipeline = gated
    assert code == 1
    store = ResultStore(f"sqlite:///{config.parent / 'recon-results.sqlite'}")
    windows = store.windows(pipeline)
    assert list(windows["status"]) == ["ok", "breach", "ok"]
    breached = windows["window_id"].iloc[1]
    lake = store.window_metrics(breached).set_index("stage").loc["lake"]
    assert (lake["lost"], bool(lake["breach"])) == (20, True)
    note = "lake: expectation 'lake loses at most 10 an hour' failed: observed 20"
    assert note in store.notes(breached)
    assert f"note: {note}" in out
    for window_id, failed in zip(windows["window_id"], [False, True, False], strict=True):
        mine = store.expectations(window_id)
        named = mine[mine["name"].notna()].set_index("name")
        assert sorted(named.index) == [
            "expect_column_max_to_be_between(dead_lettered, max 3)",
            "expect_column_values_to_be_between(latency_p99_ms, max 2000)",
            "lake loses at most 10 an hour",
        ]
        assert bool(named.loc["lake loses at most 10 an hour", "success"]) != failed
        assert named.loc["expect_column_max_to_be_between(dead_lettered, max 3)", "observed"] == 3
        assert named["success"].sum() == (2 if failed else 3)
        assert mine[mine["name"].isna()]["success"].all()  # recon's own: loss_rate 0.5
    report = json.loads((config.parent / "run.json").read_text())
    assert note in report["windows"][1]["notes"]
    assert main(["expectations", "--config", str(config), "--write"]) == 0
    written = json.loads(suite_path(load_config(config)).read_text())["expectations"]
    assert [e for e in written if (e.get("meta") or {}).get("recon") != "generated"] == USER
    assert len(written) == len(USER) + 6  # loss_rate of 2 hops and end to end, 3 unreadable


def test_dead_letters_are_counted_by_their_error(gated) -> None:
    """Each hour's 3 dead letters, by their `error` header: hours 0 and 1 have 2 SCHEMA and 1
    TIMEOUT; hour 2 has 1 SCHEMA and 2 with an empty header. The store, the notes and the
    dashboard's window page give these counts."""
    config, _, _, pipeline = gated
    store = ResultStore(f"sqlite:///{config.parent / 'recon-results.sqlite'}")
    windows = list(store.windows(pipeline)["window_id"])
    want = [
        [("lake", SCHEMA, 2), ("lake", TIMEOUT, 1)],
        [("lake", SCHEMA, 2), ("lake", TIMEOUT, 1)],
        [("lake", NO_ERROR_HEADER, 2), ("lake", SCHEMA, 1)],
    ]
    for window_id, expected in zip(windows, want, strict=True):
        got = store.dead_letter_errors(window_id)
        assert list(got.itertuples(index=False, name=None)) == expected
    assert f"lake: 3 dead-lettered by error: 2 {SCHEMA!r}, 1 {TIMEOUT!r}" in store.notes(windows[0])
    status, _, body = Dashboard(store).respond(f"/window/{windows[2]}", {})
    assert status == "200 OK"
    assert (
        "<h2>Dead letters by error</h2><table class='dead-letters'><tr><th>stage</th><th>error"
        f"</th><th>events</th></tr><tr><td>lake</td><td class='error-text'>{NO_ERROR_HEADER}"
        f"</td><td>2</td></tr><tr><td>lake</td><td class='error-text'>{SCHEMA}</td><td>1</td>"
    ) in body.decode()


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is not installed (scripts/setup.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture
def served(gated) -> Iterator[tuple[str, ResultStore, str]]:
    config, _, _, pipeline = gated
    store = ResultStore(f"sqlite:///{config.parent / 'recon-results.sqlite'}", read_only=True)
    server = make_server("127.0.0.1", 0, Dashboard(store, load_config(config)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", store, pipeline
    server.shutdown()


def test_the_runs_data_docs_open_from_the_dashboard(browser, served) -> None:
    """The run built GX's Data Docs beside the config (data-docs/<run id>/). It gated its
    windows in 2 batches (hour 0 alone, then hours 1-2): 2 validation pages of the row
    expectations, and 3 of the per-window max (one a window). The breached window links
    them; the second batch's page renders offline, no script run, and shows the user's
    failed expectation. A path outside the site is not served."""
    url, store, pipeline = served
    windows = store.windows(pipeline)
    run_id = str(windows["run_id"].iloc[1])
    index = store.data_docs(run_id)
    assert index is not None and index.is_file() and index.parent.name == run_id
    page = browser.new_page()
    page.goto(f"{url}/window/{windows['window_id'].iloc[1]}")
    page.click("a.data-docs")
    links = page.locator("ul.validations a")
    names = [links.nth(i).inner_text() for i in range(links.count())]
    assert sum("/rows/" in n for n in names) == 2
    assert sum("/per_window/" in n for n in names) == 3
    failed = [i for i, n in enumerate(names) if "/rows/" in n][1]  # in time order
    links.nth(failed).click()
    text = page.inner_text("body")
    assert "Expectation Validation Result" in text
    assert "lost" in text and "10" in text
    assert page.evaluate("typeof jQuery") == "undefined"  # the CSP ran none of its scripts
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "data-docs-validation.png"), full_page=True)
    outside = page.goto(f"{url}/docs/{run_id}/..%2F..%2Fpipeline.yaml")
    assert outside is not None and outside.status == 404


def test_a_config_built_in_code_writes_no_suite(tmp_path: Path, monkeypatch) -> None:
    """A config without a file (parse_config, no base) has no suite directory: the gate
    validates recon's generated suite in memory and writes nothing into the working directory
    (no expectations/, no Data Docs). Its 1 window: the lake lost 3 of 100, over loss_rate
    0.01: the lake's loss_rate and the end to end's fail, the other 4 expectations pass."""
    monkeypatch.chdir(tmp_path)
    cfg = _in_code("in-code", {"loss_rate": 0.01})
    assert suite_path(cfg) is None and cfg.data_docs is None
    suite = ensure_suite(cfg)
    window = Window(START, START + timedelta(hours=1))
    stages = [StageMetrics("webhook", upstream=100, arrived=100),
              StageMetrics("lake", upstream=100, arrived=97, lost=3)]  # fmt: skip
    e2e = StageMetrics("end_to_end", upstream=100, arrived=97, lost=3)
    gate = Gate(cfg, suite, "00000000-0000-0000-0000-000000000001")
    outcomes = gate([Computed("in-code", window, 100, stages, e2e)])[window]
    assert sorted((o.stage, o.column, o.success) for o in outcomes) == [
        ("end_to_end", "loss_rate", False),
        ("lake", "loss_rate", False),
        ("lake", "unreadable_rate", True),
        ("webhook", "unreadable_rate", True),
    ]
    assert gate.build_docs(None) is None
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="names no directory"):
        ensure_suite(cfg, write=True)


def _in_code(pipeline: str, thresholds: dict, **more: object) -> PipelineConfig:
    """A webhook -> lake config built in code (no file); its sources are never read."""
    return parse_config(
        {
            "pipeline": pipeline,
            "thresholds": thresholds,
            "stages": [
                {"name": "webhook", "source": "sql", "url": "postgresql+psycopg://x@h/d",
                 "table": "t", "id": "i", "time": "t"},
                {"name": "lake", "source": "parquet", "path": "/nonexistent", "id": "i",
                 "time": "t"},
            ],
            **more,
        }
    )  # fmt: skip


def _suite_dir(tmp_path: Path, user: list[dict]) -> PipelineConfig:
    """A config with a suite directory holding recon's expectations and `user`'s."""
    cfg = _in_code("user-suite", {"loss_rate": 1}, expectations=str(tmp_path / "expectations"))
    suite = ensure_suite(cfg)
    path = suite_path(cfg)
    assert path is not None
    path.write_text(json.dumps({**suite, "expectations": [*suite["expectations"], *user]}))
    return cfg


def test_mostly_is_a_share_of_each_windows_rows(tmp_path: Path) -> None:
    """`late` at most 0 for `mostly` 0.3 of the rows: window 1 has late events at 2 of its 3
    rows (lake, end to end; webhook 0): 1/3 >= 0.3 passes, as GX says; window 2 has them
    at all 3: 0/3 fails, at each of its 3 rows."""
    mostly = {"type": "expect_column_values_to_be_between",
              "kwargs": {"column": "late", "max_value": 0, "mostly": 0.3}}  # fmt: skip
    cfg = _suite_dir(tmp_path, [mostly])
    gate = Gate(cfg, ensure_suite(cfg), "00000000-0000-0000-0000-000000000002")
    one, two = (Window(START + timedelta(hours=h), START + timedelta(hours=h + 1)) for h in (0, 1))

    def window(w: Window, late_at_origin: int) -> Computed:
        stages = [StageMetrics("webhook", upstream=10, arrived=10, late=late_at_origin),
                  StageMetrics("lake", upstream=10, arrived=10, late=5)]  # fmt: skip
        return Computed("user-suite", w, 10, stages, StageMetrics("end_to_end", 10, 10, late=5))

    outcomes = gate([window(one, 0), window(two, 1)])
    mine = {w: [o for o in outcomes[w] if o.column == "late"] for w in (one, two)}
    assert [o.success for o in mine[one]] == [True]
    assert sorted((o.stage, o.observed, o.success) for o in mine[two]) == [
        ("end_to_end", 5.0, False),
        ("lake", 5.0, False),
        ("webhook", 1.0, False),
    ]


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ({"type": "expect_column_values_to_be_betwen", "kwargs": {"column": "lost"}},
         "Great Expectations has no type 'expect_column_values_to_be_betwen'"),
        (_at_most("latency_p99_ms", 1, "kafak"), "no stage 'kafak' in this pipeline"),
    ],
    ids=["misspelled type", "a stage the pipeline does not have"],
)  # fmt: skip
def test_a_user_expectation_that_cannot_judge_anything_is_a_config_error(
    tmp_path: Path, user: dict, message: str
) -> None:
    """GX drops a type it does not know with a log line, and a row condition on a stage the
    pipeline lacks never matches: both would pass forever. Both stop the run (exit 2)."""
    cfg = _suite_dir(tmp_path, [user])
    with pytest.raises(ConfigError, match=message):
        ensure_suite(cfg)


def test_an_error_header_with_a_nul_is_stored_by_postgresql(pg_store: str) -> None:
    """A producer's error header holding U+0000 (PostgreSQL's text refuses it): counted under
    the text with U+FFFD in its place, and the window is stored, not failed forever."""
    from recon.sources.kind import error_text

    text = error_text({"x-error": "Bad\x00frame"})
    assert text == "Bad\ufffdframe"
    window = Window(START, START + timedelta(hours=1))
    stages = [StageMetrics("webhook", upstream=1, arrived=1),
              StageMetrics("lake", upstream=1, arrived=0, dead_lettered=1)]  # fmt: skip
    from recon.model import Status, WindowResult

    result = WindowResult(
        "nul-error",
        window,
        Status.BREACH,
        events=1,
        stages=stages,
        end_to_end=StageMetrics("end_to_end", upstream=1, arrived=0, dead_lettered=1),
        notes=[f"lake: 1 dead-lettered by error: 1 {text!r}"],
        dead_letter_errors={"lake": {text: 1}},
    )
    store = ResultStore(pg_store)
    store.upgrade()
    result.run_id = store.start_run("nul-error", window.start, window.end, "digest")
    store.save_window(result, {})
    stored = store.dead_letter_errors(store.windows("nul-error")["window_id"].iloc[0])
    assert stored.to_dict("records") == [{"stage": "lake", "error": "Bad\ufffdframe", "events": 1}]
