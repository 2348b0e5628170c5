"""The two UIs in a real browser: Debian's chromium driven by Playwright, servers on 127.0.0.1 only.

Dagster: a real webserver on a copy of the session's tiny sms_spam run (tiny BERT), whose instance holds the seven
materialized assets with their checks and metadata; the user launches raw_dataset again from the asset graph.
MLflow: a real server over the store of the session's tiny sms_spam lab.
"""

from __future__ import annotations

import re
import time
import urllib.parse

import pytest
import uis
from conftest import copy_run_root, requires_data

pytestmark = requires_data
ASSETS = ["raw_dataset", "validated_dataset", "splits", "tokenized", "adapter", "evaluation", "published_adapter"]
RUN_DEADLINE_S = 600  # a run worker and a step, each in its own subprocess, on a shared 2-core box
WIDE = {"width": 1600, "height": 1000}


@pytest.fixture(scope="module")
def browser():
    uis.require_browser()
    with uis.chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return uis.screenshot_dir(tmp_path_factory.mktemp("screenshots"))


@pytest.fixture(scope="module")
def dagster_ui(browser, tiny_spam_run, tmp_path_factory):
    """The webserver on a copy of the session's tiny sms_spam run: its Dagster instance, FTLAB_HOME and lab file."""
    root = copy_run_root(tiny_spam_run["root"], tmp_path_factory.mktemp("dagster_ui") / "run")
    port = uis.free_port()
    env = {"DAGSTER_HOME": str(uis.dagster_home(root / "dagster")), "FTLAB_HOME": str(root / "home"),
           "FTLAB_LABS_DIR": str(root / "labs")}
    with uis.serve(uis.dagster_webserver(port), f"http://127.0.0.1:{port}/server_info", root / "webserver.log", env):
        yield {"url": f"http://127.0.0.1:{port}", "home": root / "dagster"}


def new_page(browser):
    page = browser.new_context(viewport=WIDE).new_page()
    # A new Dagster instance greets the first visit with a "Join the Dagster community" dialog: skip it.
    page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())
    return page


@pytest.fixture
def page(browser):
    page = new_page(browser)
    yield page
    page.context.close()


def launched_run_id(dagster_home, prefix: str) -> str:
    """The full id of the run whose 8-character prefix the UI's toast shows."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        ids = [r.run_id for r in instance.get_runs() if r.run_id.startswith(prefix)]
    assert len(ids) == 1, (prefix, ids)
    return ids[0]


def wait_for_run(dagster_home, run_id: str):
    """The run's final record, read from the instance the webserver writes."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        deadline = time.monotonic() + RUN_DEADLINE_S
        while time.monotonic() < deadline:
            run = instance.get_run_by_id(run_id)
            if run is not None and run.is_finished:
                return run, [e.user_message for e in instance.all_logs(run_id)]
            time.sleep(2)
    raise AssertionError(f"run {run_id} not finished after {RUN_DEADLINE_S}s")


@pytest.fixture(scope="module")
def launched_run(browser, dagster_ui, shots):
    """Select raw_dataset in the asset graph and press "Materialize", as a user would."""
    page = new_page(browser)
    # The URL the asset selection box produces for `key:"sms_spam/raw_dataset"`; typing it races the community
    # dialog of a new instance for the keyboard focus.
    selection = urllib.parse.quote('key:"sms_spam/raw_dataset"', safe="")
    page.goto(f"{dagster_ui['url']}/asset-groups~{selection}/", wait_until="load")
    page.locator("svg foreignObject").get_by_text("raw_dataset", exact=True).wait_for()
    assert page.locator("svg foreignObject").count() == 1, "the selection should show raw_dataset only"
    page.get_by_role("button").filter(has_text=re.compile(r"^\s*Materialize\s*$")).click()
    toast = page.get_by_text(re.compile(r"Launched run [0-9a-f]{8}")).first
    toast.wait_for()
    run_id = launched_run_id(dagster_ui["home"], re.search(r"[0-9a-f]{8}", toast.inner_text()).group(0))
    run, logs = wait_for_run(dagster_ui["home"], run_id)
    page.goto(f"{dagster_ui['url']}/runs/{run_id}", wait_until="load")
    yield {"run": run, "logs": logs, "run_page": page}
    page.context.close()


def test_asset_graph_shows_the_seven_assets_of_the_lab(dagster_ui, launched_run, page, shots):
    page.goto(f"{dagster_ui['url']}/locations/ftlab_pipelines.definitions/asset-groups/sms_spam", wait_until="load")
    nodes = page.locator("svg foreignObject")  # the graph draws each asset as an HTML node inside its SVG
    for asset in ASSETS:
        nodes.get_by_text(asset, exact=True).first.wait_for()
    assert [nodes.get_by_text(asset, exact=True).count() for asset in ASSETS] == [1] * len(ASSETS)
    page.screenshot(path=shots / "dagster_asset_graph.png")


def test_materialization_launched_from_the_ui_succeeds(launched_run):
    import dagster as dg

    run = launched_run["run"]
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.asset_selection == {dg.AssetKey(["sms_spam", "raw_dataset"])}
    page = launched_run["run_page"]
    page.get_by_text("Success", exact=True).first.wait_for()
    # Progress lines of core/progress.py reach the Dagster run log through dagster.yaml's python_logs.
    assert any(re.fullmatch(r"loading .*sms_spam\.csv: done in \w+", m or "") for m in launched_run["logs"])


def test_contract_check_is_shown_as_passed(dagster_ui, launched_run, page, tmp_path):
    page.goto(f"{dagster_ui['url']}/assets/sms_spam/validated_dataset?view=checks", wait_until="load")
    page.get_by_text("This is a blocking asset check.").wait_for()
    assert page.get_by_text("data_contract", exact=True).first.is_visible()
    page.get_by_text("Passed", exact=True).first.wait_for()
    page.screenshot(path=tmp_path / "dagster_contract_check.png")


def test_splits_metadata_shows_the_class_distribution(dagster_ui, launched_run, page, shots, tmp_path):
    page.goto(f"{dagster_ui['url']}/assets/sms_spam/splits", wait_until="load")
    table = page.locator("table").filter(has_text="train (undersampled)").last
    table.wait_for()
    headers = table.locator("th").all_inner_texts()
    assert {"raw", "train (natural)", "train (undersampled)", "validation", "test"} <= {h.strip() for h in headers}
    rows = table.locator("tr").all_inner_texts()
    assert any(r.strip().startswith("ham") for r in rows) and any(r.strip().startswith("spam") for r in rows)
    table.locator("tr").last.scroll_into_view_if_needed()  # the whole table, with its totals row
    page.screenshot(path=shots / "dagster_splits_metadata.png")
    # The plot next to it: an inline PNG in the metadata, opened from its row.
    row = page.locator("tr").filter(has_text="class_distribution_plot").last
    row.get_by_text("Show Markdown").click()
    image = page.locator("img[src^='data:image/png;base64,']").last
    image.wait_for()
    assert image.evaluate("img => img.naturalWidth") > 200
    page.screenshot(path=tmp_path / "dagster_class_distribution_plot.png")  # not in the README


@pytest.fixture(scope="module")
def mlflow_ui(browser, tiny_spam_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_ui")
    port = uis.free_port()
    store = tiny_spam_run["home"] / "mlflow.db"
    with uis.serve(uis.mlflow_server(store, port), f"http://127.0.0.1:{port}/health", root / "mlflow.log", {}):
        yield {"url": f"http://127.0.0.1:{port}", "tracking_uri": f"sqlite:///{store}"}


def experiment_id(tracking_uri: str) -> str:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name("ftlab/sms_spam").experiment_id


def show_tag_columns(page, tags: list[str]) -> None:
    page.get_by_role("button", name="Columns").click()
    search = page.get_by_placeholder("Search columns")
    for tag in tags:
        search.fill(tag)
        page.locator(f'span[title="{tag}"]').first.click()  # the tag's node in the column tree
    page.keyboard.press("Escape")


def close_assistant(page) -> None:
    """Close MLflow's assistant side panel, if it is open, so the page has the room."""
    close = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close.count():
        close.click()


def test_mlflow_experiment_lists_asset_runs_with_lab_and_asset_tags(mlflow_ui, page, shots):
    # MLflow 3 opens an experiment on its GenAI pages; ftlab's runs are under "Model training".
    runs = f"#/experiments/{experiment_id(mlflow_ui['tracking_uri'])}/runs?workflowType=machine_learning"
    page.goto(f"{mlflow_ui['url']}/{runs}", wait_until="load")
    page.get_by_text(re.compile(r"^sms_spam dagster:[0-9a-f]{8}$")).first.wait_for()  # the parent run
    close_assistant(page)
    show_tag_columns(page, ["lab", "asset"])
    page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()  # expand the parent run
    for asset in ASSETS:
        page.get_by_role("link", name=asset, exact=True).first.wait_for()
    asset_cells = page.locator('[role="gridcell"][col-id="tags.`asset`"]').all_inner_texts()
    lab_cells = page.locator('[role="gridcell"][col-id="tags.`lab`"]').all_inner_texts()
    assert set(ASSETS) <= {c.strip() for c in asset_cells}, asset_cells
    assert {c.strip() for c in lab_cells} == {"sms_spam"}, lab_cells
    page.screenshot(path=shots / "mlflow_runs.png")


def test_mlflow_registered_model_shows_the_champion_alias(mlflow_ui, page, shots):
    page.goto(f"{mlflow_ui['url']}/#/models/ftlab-sms_spam", wait_until="load")
    version = page.get_by_role("row").filter(has_text="Version 1").first
    version.wait_for()
    close_assistant(page)
    assert re.search(r"@\s*champion", version.inner_text()), version.inner_text()
    page.screenshot(path=shots / "mlflow_champion.png")
