"""The two UIs in a real browser: Debian's chromium driven by Playwright, servers on 127.0.0.1 only.

Dagster: a real webserver on a copy of the session's tiny sms_spam run (tiny BERT), whose instance holds the seven
materialized assets with their checks and metadata; the user launches raw_dataset again from the asset graph.
MLflow: a real server over the store of the session's tiny sms_spam lab: its runs, the release run's datasets and model,
the registered version and the logged model it was registered from.
"""

from __future__ import annotations

import json
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


@pytest.fixture(scope="module", autouse=True)
def mlflow_server_starting(tiny_spam_run, tmp_path_factory):
    """The MLflow server over the session's tiny sms_spam store (which the Dagster tests below do not touch), started
    first so that it boots while the Dagster tests run; `mlflow_ui` waits for it."""
    root = tmp_path_factory.mktemp("mlflow_ui")
    port = uis.free_port()
    store = tiny_spam_run["home"] / "mlflow.db"
    process = uis.start_server(uis.mlflow_server(store, port), root / "mlflow.log", uis.MLFLOW_SERVER_ENV)
    try:
        yield {"url": f"http://127.0.0.1:{port}", "tracking_uri": f"sqlite:///{store}", "process": process,
               "log": root / "mlflow.log"}
    finally:
        uis.stop_server(process)


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
            time.sleep(0.5)
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
def mlflow_ui(mlflow_server_starting):
    server = mlflow_server_starting
    uis.wait_until_up(f"{server['url']}/health", server["process"], server["log"])
    return server


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


LAB_DATASETS = {"sms_spam.train": "training", "sms_spam.validation": "validation", "sms_spam.test": "testing"}


def release_lineage(tracking_uri: str) -> dict:
    """What the UI should show, read with MLflow's client: the release run, the digest of its datasets (ftlab's key of
    the splits), the test split's file, and the logged model that registered version 1 was made from."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    (run,) = client.search_runs([experiment_id(tracking_uri)], "tags.asset = 'published_adapter'")
    datasets = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert set(datasets) == set(LAB_DATASETS), datasets
    (digest,) = {d.digest for d in datasets.values()}
    version = client.get_model_version("ftlab-sms_spam", "1")
    assert re.fullmatch(r"models:/m-[0-9a-f]{32}", version.source), version.source
    model_id = version.source.removeprefix("models:/")
    assert model_id in {m.model_id for m in run.outputs.model_outputs}
    metric = version.tags["primary_metric"]
    return {"run_id": run.info.run_id, "digest": digest, "test_file": json.loads(datasets["sms_spam.test"].source)["uri"],
            "model_id": model_id, "metric": f"test_{metric}", "value": float(version.tags[f"test_{metric}"]),
            "experiment_id": run.info.experiment_id}


def close_assistant(page) -> None:
    """Close MLflow's assistant side panel, if it is open, so the page has the room."""
    close = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close.count():
        close.click()


def open_runs(page, mlflow_ui) -> None:
    """The experiment's runs table, with the parent run of the materialization shown."""
    # MLflow 3 opens an experiment on its GenAI pages; ftlab's runs are under "Model training".
    runs = f"#/experiments/{experiment_id(mlflow_ui['tracking_uri'])}/runs?workflowType=machine_learning"
    page.goto(f"{mlflow_ui['url']}/{runs}", wait_until="load")
    page.get_by_text(re.compile(r"^sms_spam dagster:[0-9a-f]{8}$")).first.wait_for()  # the parent run
    close_assistant(page)


def expand_parent_run(page) -> None:
    page.locator('button[data-component-id*="runnamecellrenderer"]').first.click()


def test_mlflow_experiment_lists_asset_runs_with_lab_and_asset_tags(mlflow_ui, page, shots):
    open_runs(page, mlflow_ui)
    show_tag_columns(page, ["lab", "asset"])
    expand_parent_run(page)
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


def test_mlflow_release_run_shows_its_datasets_and_model(mlflow_ui, page, shots):
    """The runs table shows the release run's three splits, each with its context, and the version registered from
    its model; the dataset drawer shows the test split's file and size."""
    import pandas as pd

    lineage = release_lineage(mlflow_ui["tracking_uri"])
    digest = lineage["digest"]
    open_runs(page, mlflow_ui)
    expand_parent_run(page)
    # AG Grid draws a row in two parts (pinned and scrolled columns); both carry the run's id.
    row = f'[role="row"][row-id="{lineage["run_id"]}"]'
    page.locator(row).get_by_role("link", name="published_adapter", exact=True).wait_for()

    datasets = page.locator(f'{row} [role="gridcell"][col-id="attributes.`Dataset`"]')
    names = datasets.get_by_test_id("open-dataset-drawer")
    names.first.wait_for()
    assert sorted(names.all_text_contents()) == sorted(f"{name} ({digest})" for name in LAB_DATASETS)
    for name, context in LAB_DATASETS.items():
        entry = datasets.locator("div").filter(has=page.locator(f'span[title="{name} ({digest})"]')).last
        assert entry.get_by_role("status").text_content().strip() == context, entry.inner_text()

    models = page.locator(f'{row} [role="gridcell"][col-id="attributes.`Models`"]').get_by_role("link")
    assert models.get_attribute("href") == "#/models/ftlab-sms_spam/versions/1"
    assert re.fullmatch(r"ftlab-sms_spam\s+v1", models.inner_text().strip()), models.inner_text()

    # The cell shows the first dataset; "+2" lists the others, and a name opens the run's dataset drawer.
    datasets.get_by_role("button", name="+2").click()
    others = page.get_by_role("dialog", name="Popover content")
    others.get_by_role("button", name=f"sms_spam.test ({digest})").click()
    drawer = page.get_by_role("dialog").filter(has_text="Data details for")
    drawer.get_by_text(f"Digest: {digest}").wait_for()
    test_split = pd.read_parquet(lineage["test_file"])
    text = drawer.inner_text()
    for shown in ["3 datasets used", f"num rows: {len(test_split)}", f"Path: {lineage['test_file']}"]:
        assert shown in text, (shown, text)
    assert set(test_split.columns) <= set(text.split()), text  # the schema table lists the split's columns
    page.screenshot(path=shots / "mlflow_release_datasets.png")


def test_mlflow_model_version_links_to_the_logged_model(mlflow_ui, page, shots):
    """Version 1 names the logged model it was registered from (source models:/m-...); following the link opens that
    model's page, with the test metrics linked to the test split and the release run."""
    lineage = release_lineage(mlflow_ui["tracking_uri"])
    model_id, digest = lineage["model_id"], lineage["digest"]
    page.goto(f"{mlflow_ui['url']}/#/models/ftlab-sms_spam/versions/1", wait_until="load")
    source = page.get_by_test_id("source-model-link")
    source.wait_for()
    close_assistant(page)
    item = page.get_by_test_id("descriptions-item").filter(has=source)
    assert item.get_by_test_id("descriptions-item-label").inner_text().strip() == "Source Model"
    assert source.get_attribute("href") == f"#/experiments/{lineage['experiment_id']}/models/{model_id}"
    assert source.inner_text().strip() == "model"  # the name the release logs it under
    run = page.get_by_test_id("descriptions-item").filter(has_text="Source Run").get_by_role("link")
    assert run.get_attribute("href").endswith(f"/runs/{lineage['run_id']}"), run.get_attribute("href")
    assert run.inner_text().strip() == "published_adapter"
    page.screenshot(path=shots / "mlflow_model_version.png")

    source.click()
    page.wait_for_url(re.compile(rf"#/experiments/{lineage['experiment_id']}/models/{model_id}$"))
    page.get_by_test_id("key-value-Model ID").get_by_text(model_id, exact=True).wait_for()
    close_assistant(page)
    page.get_by_role("heading", name="model", exact=True).wait_for()  # the name the release logs it under
    source_run = page.get_by_test_id("key-value-Source run").get_by_role("link")
    assert source_run.inner_text().strip() == "published_adapter"
    assert source_run.get_attribute("href").endswith(f"/runs/{lineage['run_id']}"), source_run.get_attribute("href")
    used = page.locator("div").filter(has=page.get_by_role("heading", name="Datasets used", exact=True)).last
    used.get_by_role("button").first.wait_for()
    assert used.get_by_role("button").all_inner_texts() == [f"sms_spam.test (#{digest})"]
    versions = page.locator("div").filter(has=page.get_by_role("heading", name="Model versions", exact=True)).last
    assert versions.get_by_role("link").get_attribute("href") == "#/models/ftlab-sms_spam/versions/1"
    # The primary test metric, linked to the test split and the release run, equals the version's gate value.
    metric = page.get_by_role("row").filter(has=page.get_by_role("cell", name=lineage["metric"], exact=True))
    metric.wait_for()
    cells = [c.strip() for c in metric.get_by_role("cell").all_inner_texts()]
    assert cells[1:3] == [f"sms_spam.test (#{digest})", "published_adapter"], cells
    assert float(cells[3]) == pytest.approx(lineage["value"]), cells
    page.screenshot(path=shots / "mlflow_logged_model.png")
