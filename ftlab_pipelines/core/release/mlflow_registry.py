"""The MLflow Model Registry side of a release: versions, the promotion gate, the `champion` alias.

Every published adapter becomes a model version tagged with its test metric and release key. The gate
moves `champion` only when the challenger beats it on the lab's primary metric by `min_improvement`;
`promote` moves it by hand. Both record who moved it, when and why on the version's tags.
"""

from __future__ import annotations

import datetime as dt
import getpass
from dataclasses import dataclass

from ftlab_pipelines.core.tracking import using_store

CHAMPION = "champion"


@dataclass
class GateVerdict:
    """The promotion gate's decision for one challenger version."""

    version: int
    promoted: bool
    passed: bool  # promoted, or already the champion (an unchanged re-publish)
    champion_version: int | None
    previous_champion_value: float | None
    reused_version: bool
    reason: str

    def as_dict(self) -> dict:
        return {"version": self.version, "promoted": self.promoted, "champion_version": self.champion_version,
                "previous_champion_value": self.previous_champion_value, "reused_version": self.reused_version}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, tags={"ftlab": "true"})
    except MlflowException:
        pass  # already registered


def champion(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def versions(client, name: str) -> list:
    """All versions of a registered model, oldest first (empty when it was never registered)."""
    found = client.search_model_versions(f"name = '{name}'")
    return sorted(found, key=lambda v: int(v.version))


def beats(value: float | None, current: float | None, min_improvement: float, greater_is_better: bool) -> bool:
    if value is None or value != value:
        return False
    if current is None or current != current:  # no champion, or one without this metric
        return True
    if greater_is_better:
        return value > current + min_improvement
    return value < current - min_improvement


def register_and_gate(client, name: str, source_uri: str, run_id: str, metric: str, value: float | None,
                      min_improvement: float, greater_is_better: bool = True, release_key: str = "",
                      model_id: str | None = None) -> GateVerdict:
    """Register the challenger (or find the version already holding this exact release) and run the gate."""
    ensure_registered_model(client, name)
    same = [v for v in versions(client, name) if release_key and v.tags.get("release_key") == release_key]
    if same:
        version = same[-1]
    else:
        tags = {f"test_{metric}": str(value), "primary_metric": metric, "release_key": release_key}
        # A `models:/<model_id>` source is resolved through MLflow's process-wide store, so register inside it.
        with using_store(client.tracking_uri):
            if model_id:  # a logged model: MLflow links it and the version both ways (its page lists the version)
                import mlflow

                version = mlflow.register_model(source_uri, name, tags=tags)
            else:
                version = client.create_model_version(name, source_uri, run_id=run_id, tags=tags)
    current = champion(client, name)
    current_value = float(current.tags.get(f"test_{metric}", "nan")) if current else None
    number = int(version.version)
    if current is not None and int(current.version) == number:
        return GateVerdict(number, False, True, number, current_value, bool(same),
                           f"v{number} is already the champion (same release re-published): alias unchanged")
    better = beats(value, current_value, min_improvement, greater_is_better)
    direction = "higher" if greater_is_better else "lower"
    if better:
        move_alias(client, name, number, "gate", f"test_{metric} {value:.4f} beats "
                   + (f"v{current.version}'s {current_value:.4f}" if current else "no champion"))
        reason = (f"v{number} promoted: test_{metric} {value:.4f} vs champion "
                  + (f"v{current.version} {current_value:.4f}" if current else "(none)")
                  + f", {direction} is better, min_improvement {min_improvement:g}")
    elif current is None:
        reason = f"v{number} not promoted: it has no test_{metric} value to compare; there is no champion yet"
    else:
        reason = (f"v{number} not promoted: test_{metric} {value} does not beat champion v{current.version} "
                  f"{current_value:.4f} by min_improvement {min_improvement:g} ({direction} is better); "
                  f"the champion is unchanged")
    champion_version = number if better else (int(current.version) if current else None)
    return GateVerdict(number, better, better, champion_version, current_value, bool(same), reason)


def move_alias(client, name: str, version: int, how: str, why: str) -> None:
    """Point `champion` at `version` and record the move on the version's tags."""
    client.set_registered_model_alias(name, CHAMPION, str(version))
    for key, value in {"promoted_at": _now(), "promoted_by": getpass.getuser(), "promotion": how,
                       "promotion_reason": why}.items():
        client.set_model_version_tag(name, str(version), key, value)


def promote(client, name: str, version: int, reason: str = "") -> dict:
    """Move the alias by hand (`ftlab promote`): any existing version, better or not, recorded as manual."""
    from mlflow.exceptions import MlflowException

    try:
        target = client.get_model_version(name, str(version))
    except MlflowException:
        known = ", ".join(f"v{v.version}" for v in versions(client, name)) or "none"
        raise ValueError(f"model {name!r} has no version {version} (versions: {known})") from None
    previous = champion(client, name)
    move_alias(client, name, version, "manual", reason or "promoted by hand with ftlab promote")
    return {"version": int(target.version), "previous_champion": int(previous.version) if previous else None,
            "run_id": target.run_id}


def describe_versions(client, name: str) -> list[dict]:
    """One row per version: metric, aliases, how it got there (for `ftlab models`)."""
    found = versions(client, name)
    aliases: dict[int, list[str]] = {}
    if found:  # search results do not carry aliases; the registered model does
        for alias, version in (client.get_registered_model(name).aliases or {}).items():
            aliases.setdefault(int(version), []).append(alias)
    rows = []
    for v in found:
        metric = v.tags.get("primary_metric", "")
        rows.append({"version": int(v.version), "aliases": sorted(aliases.get(int(v.version), [])), "metric": metric,
                     "value": v.tags.get(f"test_{metric}"), "run_id": v.run_id,
                     "created": dt.datetime.fromtimestamp(v.creation_timestamp / 1000, dt.timezone.utc)
                     .isoformat(timespec="seconds"),
                     "promotion": v.tags.get("promotion", ""), "promoted_at": v.tags.get("promoted_at", "")})
    return rows
