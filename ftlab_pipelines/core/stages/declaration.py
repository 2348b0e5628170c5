"""What each stage reads, declared once. Its Dagster code version and its cache key both come from here.

A stage sees the lab only through a `LabView` of the fields it declares: reading any other field raises
`UndeclaredConfigRead`, so a declaration cannot silently fall behind the code that uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel

from ftlab_pipelines.core.config.hashing import stable_hash
from ftlab_pipelines.core.config.labs import LabConfig
from ftlab_pipelines.core.config.settings import Settings

# Fields that identify or schedule a lab but feed no stage's output.
ORCHESTRATION_ONLY = ("name", "schedule", "inbox.enabled", "inbox.patterns", "inbox.interval_seconds")
ALWAYS_READABLE = ("name",)  # the lab's identity: it names the asset keys and the artifact folders


class UndeclaredConfigRead(AttributeError):
    """A stage read a lab field that its declaration does not list."""


@dataclass(frozen=True)
class StageDeclaration:
    """The inputs of one stage: lab fields (dotted paths) and direct upstream stages."""

    name: str
    reads: Callable[[LabConfig], tuple[str, ...]]
    upstream: tuple[str, ...] = ()
    # Inputs from outside the lab file that are known before the run (e.g. the data contract's text).
    external: Callable[[LabConfig, Settings], Mapping[str, object]] | None = field(default=None, compare=False)

    def fields(self, lab: LabConfig) -> tuple[str, ...]:
        return tuple(sorted(set(self.reads(lab))))

    def inputs(self, lab: LabConfig, settings: Settings) -> dict[str, object]:
        """The values of every declared field, plus external inputs: what the code version hashes."""
        values = {path: _json(value_at(lab, path)) for path in self.fields(lab)}
        if self.external is not None:
            values.update({f"external:{k}": v for k, v in self.external(lab, settings).items()})
        return values

    def code_version(self, lab: LabConfig, settings: Settings) -> str:
        return stable_hash({"stage": self.name, "inputs": self.inputs(lab, settings)})

    def cache_key(self, lab: LabConfig, settings: Settings, upstream_keys: Mapping[str, str],
                  facts: Mapping[str, object]) -> str:
        """The code version plus the direct upstream results' keys and run-time content facts (data hashes,
        tokenizer fingerprint): the on-disk key changes whenever the code version does."""
        missing = set(self.upstream) - set(upstream_keys)
        if missing:
            raise ValueError(f"stage {self.name}: no result for upstream {sorted(missing)}")
        return stable_hash({"version": self.code_version(lab, settings),
                            "upstream": {name: upstream_keys[name] for name in self.upstream},
                            "facts": dict(facts)})

    def view(self, lab: LabConfig) -> LabView:
        return LabView(lab, frozenset(self.fields(lab)) | frozenset(ALWAYS_READABLE), self.name)


def value_at(obj: object, path: str) -> object:
    for part in path.split("."):
        if obj is None:
            return None
        obj = getattr(obj, part)
    return obj


def _json(value: object) -> object:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


class LabView:
    """Read-only access to the declared fields of a lab (and to properties computed from them)."""

    __slots__ = ("_obj", "_allowed", "_stage", "_prefix")

    def __init__(self, obj: BaseModel, allowed: frozenset[str], stage: str, prefix: str = ""):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_allowed", allowed)
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_prefix", prefix)

    def __getattr__(self, name: str):
        path = self._prefix + name
        if any(path == a or path.startswith(a + ".") for a in self._allowed):
            return getattr(self._obj, name)
        if any(a.startswith(path + ".") for a in self._allowed):
            value = getattr(self._obj, name)
            return LabView(value, self._allowed, self._stage, path + ".") if isinstance(value, BaseModel) else value
        attribute = getattr(type(self._obj), name, None)
        if isinstance(attribute, property):  # e.g. is_binary: computed from fields, which are checked in turn
            return attribute.fget(self)
        raise UndeclaredConfigRead(
            f"stage {self._stage} reads lab.{path}, which its declaration does not list: add {path!r} to the "
            f"{self._stage} entry of DECLARATIONS in ftlab_pipelines/core/stages/pipeline.py, so that changing it "
            f"re-runs the stage")

    def __setattr__(self, name, value):
        raise AttributeError(f"stage {self._stage} may not change lab.{self._prefix}{name}")

    def __repr__(self) -> str:
        return f"LabView({self._stage}: {self._prefix or 'lab'})"
