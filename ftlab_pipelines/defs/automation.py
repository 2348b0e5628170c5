"""Retraining automation per lab: a cron schedule (from the lab's `schedule:` block) and an inbox sensor."""

from __future__ import annotations

import dagster as dg

from ftlab_pipelines.core.config.labs import LabConfig
from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.data import inbox
from ftlab_pipelines.defs.assets import raw_dataset_op_name


def retrain_schedule(lab: LabConfig, job) -> dg.ScheduleDefinition | None:
    """Defined for every lab with a `schedule:` block; stopped unless the block says `enabled: true`."""
    if lab.schedule is None:
        return None
    return dg.ScheduleDefinition(
        name=f"{lab.name}_retrain_schedule",
        job=job,
        cron_schedule=lab.schedule.cron,
        execution_timezone=lab.schedule.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING if lab.schedule.enabled else dg.DefaultScheduleStatus.STOPPED,
        description=f"Retrain {lab.name} at '{lab.schedule.cron}' ({lab.schedule.timezone}).",
    )


def inbox_run_requests(lab: LabConfig, cursor: str | None) -> tuple[list[dg.RunRequest], str]:
    """One run of the lab's chain per file whose content was never seen; the run key is the content hash,
    so even a lost cursor cannot retrain on the same bytes twice."""
    folder = inbox.inbox_dir(Settings.from_env(), lab.name)
    new_files, state = inbox.scan(folder, lab.inbox.patterns, inbox.InboxState.from_cursor(cursor))
    requests = [
        dg.RunRequest(
            run_key=f"{lab.name}:{new.sha256}",
            run_config=dg.RunConfig(ops={raw_dataset_op_name(lab.name): {
                "config": {"inbox_file": str(new.path), "inbox_sha256": new.sha256}}}),
            tags={"ftlab/lab": lab.name, "ftlab/trigger": "inbox", "ftlab/inbox_file": new.path.name,
                  "ftlab/inbox_sha256": new.sha256[:16]},
        )
        for new in new_files
    ]
    return requests, state.to_cursor()


def inbox_sensor(lab: LabConfig, job) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{lab.name}_inbox_sensor",
        job=job,
        minimum_interval_seconds=lab.inbox.interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if lab.inbox.enabled else dg.DefaultSensorStatus.STOPPED,
        description=f"Retrain {lab.name} on each new data file dropped into $FTLAB_HOME/inbox/{lab.name}/ "
                    f"(mode {lab.inbox.mode}; matched by content hash).",
    )
    def _sensor(context: dg.SensorEvaluationContext):
        requests, cursor = inbox_run_requests(lab, context.cursor)
        context.update_cursor(cursor)
        if not requests:
            return dg.SkipReason(f"no new files in {inbox.inbox_dir(Settings.from_env(), lab.name)}")
        return requests

    return _sensor
