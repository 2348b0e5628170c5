"""`ftlab`: list labs, run a lab through Dagster, predict, chat or serve with a lab's MLflow model, list and promote
model versions."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from ftlab_pipelines.core.config.settings import REPO_ROOT, Settings


def ensure_dagster_home(settings: Settings) -> Path:
    """DAGSTER_HOME defaults to FTLAB_HOME/dagster, seeded with the repo's dagster.yaml. The CLI is the edge of
    the process, so it may set the environment that Dagster's instance reads."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.home / "dagster")
    home.mkdir(parents=True, exist_ok=True)
    # The CLI is the process edge: the in-process Dagster run (DagsterInstance.get) reads DAGSTER_HOME from the
    # environment, so it is set here; library code under core/ never writes the environment.
    os.environ["DAGSTER_HOME"] = str(home)
    config = REPO_ROOT / "dagster.yaml"
    if not (home / "dagster.yaml").exists() and config.is_file():
        shutil.copy(config, home / "dagster.yaml")
    return home


def quiet_libraries() -> None:
    """Keep model-loading chatter off stdout, so `predict` prints only its JSON lines."""
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # the CLI owns its process environment
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def cmd_labs(args, settings: Settings) -> int:
    from ftlab_pipelines.core.config.loading import load_labs

    for name, lab in load_labs(settings=settings).items():
        print(f"{name:24s} {lab.task:15s} {lab.model.name:24s} {lab.description}")
    return 0


def cmd_run(args, settings: Settings) -> int:
    ensure_dagster_home(settings)
    import dagster as dg

    from ftlab_pipelines.definitions import defs

    known = sorted(job.name.removesuffix("_pipeline") for job in defs.jobs or [])
    if args.lab not in known:
        raise ValueError(f"no lab {args.lab!r} in {settings.labs_dir}; known labs: {', '.join(known)}")
    job = defs.resolve_job_def(f"{args.lab}_pipeline")
    selection = [dg.AssetKey([args.lab, a]) for a in args.only] if args.only else None
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False, asset_selection=selection)
    if not result.success:
        print(f"\nftlab: the {args.lab} run failed (Dagster run {result.run_id}).", file=sys.stderr)
        for event in result.all_events:
            if event.is_step_failure:
                print(f"  step {event.step_key}: {event.event_specific_data.error.message.strip()}", file=sys.stderr)
        return 1
    print_summary(settings, args.lab, result.run_id, args.only)
    print_stage_times(stage_seconds(result))
    return 0


def stage_seconds(result) -> dict[str, float]:
    """Wall seconds of each step of a run, in the order they finished (Dagster's STEP_SUCCESS events; a step key
    is `<lab>__<stage>`)."""
    return {event.step_key.split("__", 1)[-1]: event.event_specific_data.duration_ms / 1000
            for event in result.all_events if event.is_step_success}


def print_stage_times(seconds: dict[str, float]) -> None:
    """One line per stage and the total, so a slow stage shows at the end of `make demo`."""
    width = max(len(stage) for stage in seconds)
    print("  stage times:")
    for stage, value in seconds.items():
        print(f"    {stage:<{width}}  {value:7.1f} s")
    print(f"    {'total':<{width}}  {sum(seconds.values()):7.1f} s")


def print_summary(settings: Settings, lab: str, run_id: str, only: list[str] | None = None) -> None:
    from ftlab_pipelines.core.release.local_registry import local_champion

    release = local_champion(settings, lab)
    home = settings.home
    what = f"assets {', '.join(only)} of lab {lab}" if only else f"lab {lab}"
    print(f"\nftlab: {what} materialized (Dagster run {run_id}).")
    if release:
        path = Path(release["path"])
        metrics = {k: v for k, v in release.items() if k.startswith("test_")}
        print(f"  adapter (champion release): {path}")
        print(f"  metrics:                    {path / 'metrics.json'}  {metrics}")
        evaluation = sorted((home / "artifacts" / lab / "evaluation").glob("*/*.png"), key=os.path.getmtime)
        if evaluation:
            print(f"  plots:                      {evaluation[-1].parent}/*.png")
    print(f"  MLflow store:               {settings.mlflow_tracking_uri}")
    if release and release.get("mlflow_version") is not None:
        name = registry_name(settings, lab)
        print(f"  MLflow model:               models:/{name}/{release['mlflow_version']} "
              f"(champion: models:/{name}@champion)")
    print("  UIs: `make ui`, then Dagster http://127.0.0.1:3000 and MLflow http://127.0.0.1:5000")
    info = Path(release["path"]) / "ftlab_model.json" if release else None
    verb = "chat" if info and info.is_file() and json.loads(info.read_text()).get("task") == "sft" else "predict"
    print(f"  try it: .venv/bin/ftlab {verb} {lab} \"<some text>\"   or serve it: .venv/bin/ftlab serve {lab}")


def pyfunc_model(args, settings: Settings):
    """The lab's champion (or --version N, or --model URI) as an MLflow pyfunc model."""
    from ftlab_pipelines.core.release import serving
    from ftlab_pipelines.core.tracking import using_store

    # The client makes sure the store exists (a fresh FTLAB_HOME), so a missing model is a clear "not found".
    _, name = (None, None) if args.model else registry_client_and_name(settings, args.lab)
    with using_store(settings.mlflow_tracking_uri):
        if args.model:
            return serving.load(args.model)
        return serving.load(serving.model_uri(name, args.version), args.lab)


def cmd_predict(args, settings: Settings) -> int:
    quiet_libraries()
    import pandas as pd

    from ftlab_pipelines.core.release.serving import is_generator

    model = pyfunc_model(args, settings)
    if is_generator(model):
        raise ValueError(f"lab {args.lab!r} is a generation (sft) lab; use `ftlab chat` for it")
    columns = model.metadata.get_input_schema().input_names()
    frames = [pd.DataFrame({columns[0]: list(args.texts)})] if args.texts else []
    if args.texts and len(columns) != 1:
        raise ValueError(f"this model reads the columns {columns}; give them with --csv FILE")
    if args.csv:
        from ftlab_pipelines.core.data.sources import read_table

        frames.append(read_table(Path(args.csv), dtype="infer"))
    if not frames:
        raise ValueError("give texts to classify, or --csv FILE with the lab's columns")
    for frame in frames:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{args.csv}: lacks the column(s) {missing} that this model reads ({columns})")
        predictions = model.predict(frame[columns])
        probability_columns = [c for c in predictions.columns if c.startswith("prob_")]
        for i, (_, row) in enumerate(predictions.iterrows()):
            shown = {"text": str(frame[columns[0]].iloc[i])} if len(columns) == 1 else {"row": i}
            print(json.dumps({"label": row["label"], "score": round(float(row["score"]), 4),
                              "probabilities": {c.removeprefix("prob_"): round(float(row[c]), 4)
                                                for c in probability_columns}, **shown}))
    return 0


def cmd_chat(args, settings: Settings) -> int:
    quiet_libraries()
    import pandas as pd

    from ftlab_pipelines.core.release.serving import is_generator

    model = pyfunc_model(args, settings)
    if not is_generator(model):
        raise ValueError(f"lab {args.lab!r} is a classification lab; use `ftlab predict` for it")
    params = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    interactive = not args.messages
    messages = args.messages or iter(lambda: input("you> "), "")
    try:
        for message in messages:
            request = pd.DataFrame({"message": [message]})
            if args.no_stream:
                print(model.predict(request, params=params)["reply"].iloc[0])
                continue
            for piece in model.predict_stream(request, params=params):
                print(piece, end="", flush=True)
            print()
    except (EOFError, KeyboardInterrupt):
        if interactive:
            print()
    return 0


def cmd_serve(args, settings: Settings) -> int:
    """Serve the champion (or --version N) with MLflow's scoring server on 127.0.0.1 until interrupted."""
    from ftlab_pipelines.core.release import serving
    from ftlab_pipelines.core.tracking import using_store

    client, name = registry_client_and_name(settings, args.lab)
    uri = serving.model_uri(name, args.version)
    from mlflow.exceptions import MlflowException

    try:
        version = (client.get_model_version(name, str(args.version)) if args.version is not None
                   else client.get_model_version_by_alias(name, "champion"))
    except MlflowException as exc:
        raise ValueError(f"{uri}: no such model version ({exc.message.splitlines()[0][:200]}); run `ftlab run "
                         f"{args.lab}` or see `ftlab models {args.lab}`") from None
    with using_store(settings.mlflow_tracking_uri):
        local = serving.download(f"models:/{name}/{version.version}",
                                 settings.home / "serving" / name / str(version.version))
    command, env = serving.server_command(local, args.host, args.port)
    print(f"ftlab: serving {name} v{version.version} ({uri}) on http://{args.host}:{args.port}", flush=True)
    print(f"  curl -s http://{args.host}:{args.port}/invocations -H 'Content-Type: application/json' "
          f"-d '{{\"inputs\": ...}}'", flush=True)
    os.execve(command[0], command, env)  # the server replaces this process: signals reach it directly
    return 0


def registry_name(settings: Settings, lab: str) -> str:
    """The lab's registered model name (`publish.registry_name`, default ftlab-<lab>); an unknown lab is an error."""
    from ftlab_pipelines.core.config.loading import load_labs

    labs = load_labs(settings=settings)
    if lab not in labs:
        raise ValueError(f"no lab {lab!r} in {settings.labs_dir}; known labs: {', '.join(labs)}")
    return labs[lab].registry_name


def registry_client_and_name(settings: Settings, lab: str):
    from ftlab_pipelines.core.tracking import Tracker

    name = registry_name(settings, lab)
    return Tracker(settings).client, name


def cmd_models(args, settings: Settings) -> int:
    """The registered versions in MLflow, with their metric, aliases and promotion record."""
    from ftlab_pipelines.core.release import mlflow_registry

    client, name = registry_client_and_name(settings, args.lab)
    rows = mlflow_registry.describe_versions(client, name)
    if not rows:
        print(f"ftlab: no registered versions of {name!r} in {settings.mlflow_tracking_uri}; "
              f"run `ftlab run {args.lab}` first", file=sys.stderr)
        return 1
    local = local_releases(settings, args.lab)
    print(f"{name}  ({settings.mlflow_tracking_uri})")
    print(f"{'version':8s} {'aliases':10s} {'metric':22s} {'created (UTC)':26s} {'promotion':22s} release")
    for row in rows:
        metric = f"{row['metric']}={float(row['value']):.4f}" if row["value"] not in (None, "None") else row["metric"]
        promotion = f"{row['promotion']} {row['promoted_at'][:10]}" if row["promotion"] else ""
        print(f"v{row['version']:<7d} {','.join(row['aliases']) or '-':10s} {metric:22s} {row['created']:26s} "
              f"{promotion:22s} {local.get(row['version'], '-')}")
    return 0


def local_releases(settings: Settings, lab: str) -> dict[int, str]:
    from ftlab_pipelines.core.release import local_registry

    return {e["mlflow_version"]: e["path"] for e in local_registry.releases(settings, lab)
            if e.get("mlflow_version") is not None}


def cmd_promote(args, settings: Settings) -> int:
    """Move the champion alias by hand; the version's tags record who, when and why."""
    from ftlab_pipelines.core.release import local_registry, mlflow_registry

    client, name = registry_client_and_name(settings, args.lab)
    moved = mlflow_registry.promote(client, name, args.version, args.reason)
    local = local_registry.set_local_champion(settings, args.lab, args.version)
    previous = f"v{moved['previous_champion']}" if moved["previous_champion"] else "none"
    print(f"ftlab: {name} champion is now v{moved['version']} (was {previous}); recorded on the version's tags")
    if local is None:
        print(f"  note: v{args.version} has no release directory on this machine; `ftlab predict/chat/serve` use "
              f"its MLflow model all the same", file=sys.stderr)
    else:
        print(f"  release: {local['path']}")
    return 0


def cmd_new_lab(args, settings: Settings) -> int:
    """Infer a lab and its data contract from the user's file; print what was inferred and how to run it."""
    from ftlab_pipelines.core.data.new_lab import write_new_lab

    lab_path, contract_path, found = write_new_lab(settings, args.name, Path(args.csv), args.text, args.label,
                                                   args.model, force=args.force)
    shares = ", ".join(f"{name} {share:.1%}" for name, share in found.shares.items())
    print(f"ftlab: wrote {lab_path}\n       and {contract_path}")
    print(f"  task: {found.task} classification, {found.rows} rows; classes: {shares}")
    print(f"  texts: {found.text_chars[0]}..{found.text_chars[1]} characters; model.max_length: {found.max_tokens}")
    print(f"  run it:     ftlab run {args.name}        (or materialize the {args.name} group in `make ui`)")
    print(f"  then:       ftlab predict {args.name} \"<some text>\"")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("labs", help="list the labs in labs/*.yaml").set_defaults(func=cmd_labs)
    run = sub.add_parser("run", help="materialize a lab's assets through Dagster (in-process)")
    run.add_argument("lab")
    run.add_argument("--only", nargs="+", metavar="ASSET", help="materialize only these assets (e.g. raw_dataset)")
    run.set_defaults(func=cmd_run)
    predict = sub.add_parser("predict", help="classify texts (or CSV rows) with a lab's champion release")
    predict.add_argument("lab")
    predict.add_argument("texts", nargs="*")
    predict.add_argument("--csv", help="a CSV of tabular rows, rendered with the lab's row template")
    predict.add_argument("--version", type=lambda v: int(v.lstrip("v")), help="a model version instead of the champion")
    predict.add_argument("--model", help="any MLflow model URI instead (models:/..., runs:/..., a local directory)")
    predict.set_defaults(func=cmd_predict)
    chat = sub.add_parser("chat", help="talk to a generation lab's champion release (streams the reply)")
    chat.add_argument("lab")
    chat.add_argument("messages", nargs="*", help="messages to answer; none: read them interactively")
    chat.add_argument("--version", type=lambda v: int(v.lstrip("v")), help="a model version instead of the champion")
    chat.add_argument("--model", help="any MLflow model URI instead (models:/..., runs:/..., a local directory)")
    chat.add_argument("--max-new-tokens", type=int, help="reply length budget (default: the lab's)")
    chat.add_argument("--no-stream", action="store_true", help="print each reply when it is complete")
    chat.set_defaults(func=cmd_chat)
    serve = sub.add_parser("serve", help="serve a lab's champion (or a version) over HTTP with MLflow's scoring "
                                         "server: /ping, /invocations")
    serve.add_argument("lab")
    serve.add_argument("--version", type=lambda v: int(v.lstrip("v")), help="a model version instead of the champion")
    serve.add_argument("--port", type=int, default=5001)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    serve.set_defaults(func=cmd_serve)
    models = sub.add_parser("models", help="list a lab's registered model versions (MLflow) with metrics and aliases")
    models.add_argument("lab")
    models.set_defaults(func=cmd_models)
    promote = sub.add_parser("promote", help="move a lab's champion alias to a version by hand (recorded)")
    promote.add_argument("lab")
    promote.add_argument("version", type=lambda v: int(v.lstrip("v")), help="model version, e.g. 3 or v3")
    promote.add_argument("--reason", default="", help="why; stored on the version's tags")
    promote.set_defaults(func=cmd_promote)
    new_lab = sub.add_parser("new-lab", help="write a lab and its data contract for your own CSV (task, labels and "
                                             "lengths inferred)")
    new_lab.add_argument("name", help="lab id: lower-case letters, digits and _")
    new_lab.add_argument("--csv", required=True, metavar="PATH", help="your data (CSV, TSV, JSON, JSONL or Parquet)")
    new_lab.add_argument("--text", required=True, metavar="COL", help="column holding the input text")
    new_lab.add_argument("--label", required=True, metavar="COL", help="column holding the class label")
    new_lab.add_argument("--model", default="all-minilm-l6-v2", help="base model (offline alias, directory or hub id)")
    new_lab.add_argument("--force", action="store_true", help="overwrite an existing lab or contract of that name")
    new_lab.set_defaults(func=cmd_new_lab)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args, Settings.from_env())  # the edge: settings are read here, once
    except (ValueError, FileNotFoundError) as exc:
        print(f"ftlab: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
