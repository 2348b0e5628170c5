"""Shared fixtures: a throwaway FTLAB_HOME per test, tiny models built once per run, and each lab shape
materialized once per run.

Two tiers of models:
- tiny models (`tiny_models`): 2-layer, hidden-64 BERT and Llama models, randomly initialised from the real
  MiniLM and SmolLM2 configs, with the real tokenizers. Every test that only exercises logic uses them.
- the real MiniLM and SmolLM2 weights: one chain per family in the default suite (tests/test_real_models.py),
  everything else that needs them is marked `slow` (`make test-slow`).

A lab chain that several tests need is materialized once per session (`tiny_spam_run`, `real_spam_run`, ...);
a test that changes a trained home gets its own copy (`trained_home`). `make test` runs two pytest-xdist workers;
the scheduler below keeps each shared chain on one of them.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import functools
import importlib.util
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One torch thread (set before torch is imported; subprocesses inherit it): the tiny models gain nothing from a
# second one, and on a busy 2-core machine a second, spin-waiting thread made a tiny chain's training 4x slower
# (5.7 s vs 22.5 s). The real-model chains take every core back (`all_cores`).
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The two-node Ray tests run only inside the loopback-only network namespace that tests/test_ray_two_nodes.py starts.
IN_RAY_NETNS = os.environ.get("FTLAB_IN_RAY_NETNS") == "1"
collect_ignore = [] if IN_RAY_NETNS else ["ray_cluster"]


def shared_data_dir() -> Path | None:
    from ftlab_pipelines.core.config.settings import Settings

    return Settings.from_env().data_dir


requires_data = pytest.mark.skipif(
    shared_data_dir() is None or not (shared_data_dir() / "sms_spam" / "sms_spam.csv").is_file(),
    reason="real datasets not found: set FTLAB_DATA_DIR or put ../shared/data beside the repo",
)


# --- two workers (pytest-xdist) -----------------------------------------------------------------------------------
# `make test` runs pytest -n 2: most tests run single-threaded, so the second core would idle. Tests are handed out
# a module at a time (module fixtures are built once), and the modules that use the session's tiny sms_spam run
# all go to one worker, so that run is materialized once.
SHARED_RUN_FIXTURES = {"tiny_spam_run", "tiny_spam", "trained_home"}


@functools.cache  # read by the collection hook and by the xdist scheduler
def modules_sharing_the_tiny_spam_run() -> frozenset[str]:
    """Test modules with a test or fixture that takes one of SHARED_RUN_FIXTURES (slow tests aside: deselected)."""
    def uses_it(node) -> bool:
        return (isinstance(node, ast.FunctionDef) and bool({a.arg for a in node.args.args} & SHARED_RUN_FIXTURES)
                and not any("slow" in ast.unparse(d) for d in node.decorator_list))

    return frozenset(f"tests/{p.name}" for p in Path(__file__).parent.glob("test_*.py")
                     if any(uses_it(node) for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))))


if importlib.util.find_spec("xdist") is not None:
    def pytest_xdist_make_scheduler(config, log):
        from xdist.scheduler import LoadScopeScheduling

        shared = modules_sharing_the_tiny_spam_run()
        config.option.loadscopereorder = False  # the collection order is already the order to run scopes in

        class ModuleScheduling(LoadScopeScheduling):
            """xdist's loadscope by module, with one scope for the modules of the shared tiny sms_spam run.
            (xdist's own `loadgroup` rewrites node ids, which pytest 9 no longer reads.)"""

            def _split_scope(self, nodeid: str) -> str:
                return xdist_scope(nodeid, shared)

        return ModuleScheduling(config, log)


# Scopes xdist hands out first, longest first: the two-node Ray test (~1.5-2 min) and the modules of the shared tiny
# sms_spam run (~4 min) start together, then the few-test modules that take 15-70 s, so that the last minute is many
# short tests on both workers rather than one long module on one (measured here: a 25 s tail at half the cores).
LONGEST_FIRST = ("tests/test_ray_two_nodes.py", "tiny_spam_run", "tests/test_real_models.py",
                 "tests/test_crash_resume.py", "tests/test_new_lab.py", "tests/test_distributed.py",
                 "tests/test_postgres.py", "tests/test_tabular.py", "tests/test_throughput_resume.py")


def xdist_scope(nodeid: str, shared: set[str]) -> str:
    module = nodeid.split("::", 1)[0]
    return "tiny_spam_run" if module in shared else module


def pytest_collection_modifyitems(config, items):
    """Scopes in the order xdist hands them out: LONGEST_FIRST, then the scopes with the most tests (what xdist's own
    loadscope reorder does, which would put a one-test module last)."""
    shared = modules_sharing_the_tiny_spam_run()
    sizes = collections.Counter(xdist_scope(item.nodeid, shared) for item in items)

    def order(item) -> tuple[int, int]:
        scope = xdist_scope(item.nodeid, shared)
        return (LONGEST_FIRST.index(scope) if scope in LONGEST_FIRST else len(LONGEST_FIRST), -sizes[scope])

    items.sort(key=order)


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store, made once per run. MLflow migrates a new sqlite store's schema in ~2.5 s; a
    copy of a migrated one opens in 0.05 s. In-process tests start from a copy (`new_home`); the CLI, UI and DDP
    tests that run ftlab in a subprocess on a home of their own still create theirs."""
    from mlflow import MlflowClient

    store = tmp_path_factory.mktemp("mlflow_store_template") / "mlflow.db"
    MlflowClient(f"sqlite:///{store}").search_experiments()
    return store


def new_home(home: Path, mlflow_store: Path | None) -> Path:
    """An empty FTLAB_HOME; with `mlflow_store`, it starts with a copy of that (empty) MLflow store."""
    home.mkdir(parents=True, exist_ok=True)
    if mlflow_store is not None:
        shutil.copy(mlflow_store, home / "mlflow.db")
    return home


@pytest.fixture(autouse=True)
def ftlab_home(tmp_path_factory, mlflow_store_template, monkeypatch) -> Path:
    """Every test gets its own FTLAB_HOME (artifacts, MLflow sqlite store, registry)."""
    home = new_home(tmp_path_factory.mktemp("ftlab_home"), mlflow_store_template)
    monkeypatch.setenv("FTLAB_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


# --- tiny models -------------------------------------------------------------------------------------------------


class TinyModels:
    """Directories usable as a lab's `model.name`: weights as safetensors, the real tokenizer beside them. Each is
    built on first use (a second or two; the Llama's first build on a machine also converts SmolLM2's GGUF)."""

    def __init__(self, root: Path):
        self.root = root

    @functools.cached_property
    def classifier(self) -> Path:
        """BERT (MiniLM's config shrunk), MiniLM's tokenizer: LoRA targets query, key, value, dense."""
        from ftlab_pipelines.core.modeling.offline_models import minilm_path
        from ftlab_pipelines.core.modeling.tiny import TINY_BERT, build_tiny_model

        return build_tiny_model(minilm_path(), self.root / "bert", **TINY_BERT)

    @functools.cached_property
    def causal_lm(self) -> Path:
        """Llama (SmolLM2's config shrunk), SmolLM2's tokenizer and chat template: q_proj, v_proj, ..."""
        from ftlab_pipelines.core.config.settings import Settings
        from ftlab_pipelines.core.modeling.offline_models import smollm2_path
        from ftlab_pipelines.core.modeling.tiny import TINY_LLAMA, build_tiny_model

        return build_tiny_model(smollm2_path(Settings.from_env().model_cache), self.root / "llama", **TINY_LLAMA)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    """Tiny BERT and Llama models, built once per test run in a temp directory."""
    return TinyModels(tmp_path_factory.mktemp("tiny_models"))


# A test whose behaviour depends on the model's size or kernels (bitsandbytes 4-bit, bf16 rounding) runs on the tiny
# model by default and on the real one in `make test-slow`.
TIERS = ["tiny", pytest.param("real", marks=pytest.mark.slow)]


@pytest.fixture(params=TIERS)
def causal_lm_name(request) -> str:
    """model.name of a causal LM: the tiny Llama; in the slow tier the real SmolLM2."""
    return str(request.getfixturevalue("tiny_models").causal_lm) if request.param == "tiny" else "smollm2-135m-instruct"


@pytest.fixture(params=TIERS)
def classifier_name(request) -> str:
    """model.name of a classifier base: the tiny BERT; in the slow tier the real MiniLM."""
    return str(request.getfixturevalue("tiny_models").classifier) if request.param == "tiny" else "all-minilm-l6-v2"


# --- labs --------------------------------------------------------------------------------------------------------


def tiny_lab(base: str, model: str | Path | None = None, **overrides) -> dict:
    """A reference lab shrunk for tests: a stratified subsample and a few training steps; `model` replaces
    model.name (a tiny model's directory)."""
    raw = yaml.safe_load((REPO / "labs" / f"{base}.yaml").read_text())
    raw["source"]["max_rows"] = overrides.pop("max_rows", 400)
    raw["train"].update({"epochs": 1, "max_steps": 12, "save_steps": 6, "logging_steps": 3, "batch_size": 16})
    if model is not None:
        raw["model"]["name"] = str(model)
        # LoRA, the path of every lab but sms_spam (peft.method full): test_full_finetune trains the tiny BERT in
        # full, and the real MiniLM chain (`real_spam_run`) trains sms_spam as shipped.
        raw.setdefault("peft", {})["method"] = "lora"
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            raw.setdefault(section, {})[field] = value
        else:
            raw[key] = value
    return raw


def tiny_generation_lab(name: str, model: str | Path | None = None) -> dict:
    """A generation lab shrunk for tests: 80 rows, 8 steps, 2 short generations per model."""
    raw = yaml.safe_load((REPO / "labs" / f"{name}.yaml").read_text())
    raw["source"]["max_rows"] = 80
    raw["train"].update({"epochs": 1, "max_steps": 8, "save_steps": 4, "logging_steps": 2, "batch_size": 4})
    raw["eval"]["generation"].update({"samples": 2, "max_new_tokens": 12, "max_eval_rows": 8})
    if model is not None:
        raw["model"]["name"] = str(model)
    return raw


def write_labs(directory: Path, labs: dict[str, dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, raw in labs.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump({**raw, "name": name}))
    return directory


@contextlib.contextmanager
def home_env(home: Path):
    """FTLAB_HOME = home inside the block (for session fixtures, which cannot use monkeypatch)."""
    saved = os.environ.get("FTLAB_HOME")
    os.environ["FTLAB_HOME"] = str(home)
    try:
        yield home
    finally:
        if saved is None:
            os.environ.pop("FTLAB_HOME", None)
        else:
            os.environ["FTLAB_HOME"] = saved


@contextlib.contextmanager
def all_cores():
    """torch uses every core inside the block (the real models' matmuls), one thread again after it. Under
    pytest-xdist the other worker has the other core: one thread stays one thread."""
    import torch

    from ftlab_pipelines.core.modeling.device import usable_cores

    threads = torch.get_num_threads()
    if "PYTEST_XDIST_WORKER" not in os.environ:
        torch.set_num_threads(usable_cores())
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def materialized_labs(root: Path, labs: dict[str, dict], real_models: bool = False,
                      mlflow_store: Path | None = None):
    """Materialize every asset of `labs` once through a real Dagster instance, with FTLAB_HOME = root/home.

    root/labs holds the lab files and root/dagster the instance: the whole run lives under `root`.
    `real_models`: the labs train the real MiniLM or SmolLM2, so the materialization uses every core.
    `mlflow_store`: an empty store to start from (see `mlflow_store_template`)."""
    import dagster as dg

    from ftlab_pipelines.definitions import build_definitions
    from ftlab_pipelines.defs.resources import default_resources

    home = new_home(root / "home", mlflow_store)
    labs_dir = write_labs(root / "labs", labs)
    with home_env(home):
        defs = build_definitions(str(labs_dir))
        (root / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
            with all_cores() if real_models else contextlib.nullcontext():
                result = dg.materialize(list(defs.assets), instance=instance, resources=default_resources(),
                                        raise_on_error=False)
            yield {"result": result, "home": home, "instance": instance, "defs": defs, "labs": labs_dir,
                   "root": root}


# --- each lab shape, materialized once per session ---------------------------------------------------------------


@pytest.fixture(scope="session")
def materialize_labs(mlflow_store_template):
    """materialize_labs(root, labs, real_models=False): `materialized_labs`, starting from an empty MLflow store."""
    return functools.partial(materialized_labs, mlflow_store=mlflow_store_template)


@pytest.fixture(scope="session")
def tiny_spam_run(tmp_path_factory, tiny_models, materialize_labs):
    """The tiny sms_spam chain (400 real rows, 12 steps on the tiny BERT) through Dagster, with a real MLflow
    store; materialized once. Read it, never change it: a test that changes a trained home takes
    `trained_home`."""
    root = tmp_path_factory.mktemp("tiny_spam")
    with materialize_labs(root, {"sms_spam": tiny_lab("sms_spam", tiny_models.classifier)}) as run:
        assert run["result"].success, [e.message for e in run["result"].all_events if e.is_failure]
        written = artifact_files(run["home"])
        yield run
        # The copies (`trained_home`) point every stored path at themselves: nothing may land in the original.
        assert artifact_files(run["home"]) == written, "a test wrote into the session's tiny sms_spam run"
    shutil.rmtree(root, ignore_errors=True)


def adapter_run(lab_name: str, tmp_path: Path):
    """A new MLflow run in the lab's experiment of the current FTLAB_HOME, for calling the adapter stage directly."""
    from ftlab_pipelines.core.config.settings import Settings
    from ftlab_pipelines.core.tracking import AssetRun, Tracker

    tracker = Tracker(Settings.from_env())
    return AssetRun(tracker.client, tracker.client.create_run(tracker.experiment_id(lab_name)).info.run_id, tmp_path)


def artifact_files(home: Path) -> set[Path]:
    """Files of the artifact stores: ftlab's stage directories and MLflow's run artifacts. MLflow's own
    `registered_model_meta`, which loading a `models:/name/version` writes beside a local model, is not ours."""
    return {p for store in ("artifacts", "mlartifacts") for p in (home / store).rglob("*")
            if p.is_file() and p.name != "registered_model_meta"}


@pytest.fixture
def tiny_spam(tiny_spam_run, monkeypatch):
    """The session's tiny sms_spam run, with FTLAB_HOME pointing at its home (read only)."""
    monkeypatch.setenv("FTLAB_HOME", str(tiny_spam_run["home"]))
    return tiny_spam_run


@pytest.fixture(scope="session")
def real_spam_run(tmp_path_factory, materialize_labs):
    """The sms_spam chain on the real MiniLM (400 rows, 12 steps) through Dagster, with a real MLflow store."""
    root = tmp_path_factory.mktemp("real_spam")
    with materialize_labs(root, {"sms_spam": tiny_lab("sms_spam")}, real_models=True) as run:
        yield run
    shutil.rmtree(root, ignore_errors=True)


# --- a trained home to change ------------------------------------------------------------------------------------


def _rewrite_sqlite(db: Path, old: str, new: str) -> None:
    """Replace `old` by `new` in every text value of every table (MLflow's artifact URIs and model sources,
    Dagster's event records)."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in [c[1] for c in conn.execute(f'PRAGMA table_info("{table}")')]:
                conn.execute(f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                             f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0', (old, new, old))


TEXT_SUFFIXES = {".json", ".yaml", ".yml", ".md", ".txt", ""}


def copy_run_root(src: Path, dst: Path) -> Path:
    """Copy a materialized run's root (FTLAB_HOME, lab files, Dagster instance) and point every absolute path
    stored in it (MLflow store, registry, manifests, Dagster records) at the copy. Pickled Dagster outputs keep
    the original paths: reading an upstream output from them reads the original, which is never changed."""
    shutil.copytree(src, dst, symlinks=True)
    old, new = f"{src}{os.sep}", f"{dst}{os.sep}"
    for path in dst.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        if path.suffix == ".db":
            _rewrite_sqlite(path, old, new)
        elif path.suffix in TEXT_SUFFIXES and "storage" not in path.relative_to(dst).parts:
            data = path.read_bytes()
            if old.encode() in data:
                path.write_bytes(data.replace(old.encode(), new.encode()))
    return dst


@pytest.fixture
def trained_home(tiny_spam_run, tmp_path, monkeypatch):
    """A private copy of the tiny sms_spam run: its FTLAB_HOME (artifacts, MLflow store with the champion,
    registry), lab files and Dagster instance, at a new path. FTLAB_HOME and FTLAB_LABS_DIR point at it.
    Yields the same keys as `materialized_labs`; the instance is opened on the copy's storage."""
    import dagster as dg

    from ftlab_pipelines.definitions import build_definitions

    root = copy_run_root(tiny_spam_run["root"], tmp_path / "run")
    monkeypatch.setenv("FTLAB_HOME", str(root / "home"))
    monkeypatch.setenv("FTLAB_LABS_DIR", str(root / "labs"))
    with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
        yield {"result": tiny_spam_run["result"], "home": root / "home", "instance": instance,
               "defs": build_definitions(str(root / "labs")), "labs": root / "labs", "root": root}


def release_model(home: Path, lab: str, version: int | None = None):
    """A lab's MLflow pyfunc model (the champion, or `version`) from the store under `home`."""
    from ftlab_pipelines.core.release import serving
    from ftlab_pipelines.core.tracking import using_store

    with using_store(f"sqlite:///{home / 'mlflow.db'}"):  # MLflow's globals and env restored after
        return serving.load(serving.model_uri(f"ftlab-{lab}", version), lab)
