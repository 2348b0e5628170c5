"""Deduplicate, split stratified, and rebalance the train split only."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
from sklearn.model_selection import train_test_split

from ftlab_pipelines.core.config.labs import SplitConfig

SPLIT_NAMES = ("train", "validation", "test")


class SplitError(ValueError):
    """Data that cannot be split into a usable train set; the stage adds the file name."""


@dataclass
class SplitResult:
    frames: dict[str, pd.DataFrame]
    duplicates_removed: int
    conflicting_duplicates: int
    distributions: dict[str, dict[str, int]] = field(default_factory=dict)
    test_overlap_removed: int = 0


def drop_duplicate_texts(frame: pd.DataFrame, text_column: str | list[str],
                         label_column: str) -> tuple[pd.DataFrame, int, int]:
    """Keep the first row of each exact-duplicate input (a text column, or the feature columns of a tabular
    lab); count inputs that appeared with different labels."""
    subset = [text_column] if isinstance(text_column, str) else text_column
    labels_per_input = frame.groupby(subset)[label_column].nunique()
    conflicting = int((labels_per_input > 1).sum())
    deduped = frame.drop_duplicates(subset=subset, keep="first")
    return deduped, len(frame) - len(deduped), conflicting


def remove_test_overlap(frame: pd.DataFrame, test: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop rows of the main source that also appear (all columns equal) in the explicit test source."""
    marked = frame.merge(test.drop_duplicates(), how="left", on=list(frame.columns), indicator=True)
    kept = frame[(marked["_merge"] == "left_only").to_numpy()]
    return kept, len(frame) - len(kept)


def stratified_split(frame: pd.DataFrame, label_column: str, config: SplitConfig) -> dict[str, pd.DataFrame]:
    labels = frame[label_column]
    too_rare = labels.value_counts()
    too_rare = too_rare[too_rare < 3]
    if not too_rare.empty:
        raise SplitError(
            f"column '{label_column}': classes {too_rare.to_dict()} have fewer than 3 rows, so a stratified "
            f"train/validation/test split is impossible; add rows or merge the classes"
        )
    if config.test == 0:  # the test set comes from an explicit test source
        train, validation = train_test_split(frame, train_size=config.train / (config.train + config.validation),
                                             stratify=labels, random_state=config.seed)
        return {"train": train, "validation": validation}
    train, rest = train_test_split(frame, train_size=config.train, stratify=labels, random_state=config.seed)
    test_share_of_rest = config.test / (config.validation + config.test)
    validation, test = train_test_split(
        rest, test_size=test_share_of_rest, stratify=rest[label_column], random_state=config.seed
    )
    return {"train": train, "validation": validation, "test": test}


def undersample(frame: pd.DataFrame, label_column: str, minority_share: float, seed: int) -> pd.DataFrame:
    """Cap every class at n_min * (1 - s) / s rows, so the smallest class gets share s in a binary lab."""
    counts = frame[label_column].value_counts()
    cap = max(counts.min(), math.floor(counts.min() * (1 - minority_share) / minority_share))
    parts = [g.sample(n=min(len(g), cap), random_state=seed) for _, g in frame.groupby(label_column, sort=True)]
    return pd.concat(parts).sample(frac=1.0, random_state=seed)


def upsample(frame: pd.DataFrame, label_column: str, minority_share: float, seed: int) -> pd.DataFrame:
    """Repeat rows (with replacement) of classes below n_max * s / (1 - s) up to that size."""
    counts = frame[label_column].value_counts()
    floor_size = math.ceil(counts.max() * minority_share / (1 - minority_share))
    parts = []
    for _, group in frame.groupby(label_column, sort=True):
        parts.append(group)
        if len(group) < floor_size:
            parts.append(group.sample(n=floor_size - len(group), replace=True, random_state=seed))
    return pd.concat(parts).sample(frac=1.0, random_state=seed)


def class_counts(frame: pd.DataFrame, label_column: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in frame[label_column].value_counts().sort_index().items()}


def require_classes(frame: pd.DataFrame, label_column: str, when: str, dropped: int) -> None:
    """A classifier needs rows of at least two classes; fail here, before any model is loaded."""
    present = frame[label_column].dropna().unique() if label_column in frame.columns else []
    if len(frame) == 0:
        raise SplitError(f"no rows left {when} ({dropped} dropped): the train split would be empty; add rows, or "
                         f"point source.test_local_path at a file that is not a copy of the training data")
    if len(present) < 2:
        raise SplitError(f"column '{label_column}': only class {list(map(str, present))} {when}, a classifier needs "
                         f"at least 2; add rows of the other classes")


def make_splits(frame: pd.DataFrame, text_column: str | list[str], label_column: str, config: SplitConfig,
                test: pd.DataFrame | None = None) -> SplitResult:
    """`text_column`: the input column, or the feature columns of a tabular lab (dedupe key).
    With `test`, that frame is the test split and its rows are removed from the main source first."""
    distributions = {"raw": class_counts(frame, label_column)}
    removed = conflicting = overlap = 0
    if test is not None:
        frame, overlap = remove_test_overlap(frame, test)
        distributions["without test overlap"] = class_counts(frame, label_column)
    if config.dedupe:
        frame, removed, conflicting = drop_duplicate_texts(frame, text_column, label_column)
        distributions["deduplicated"] = class_counts(frame, label_column)
    require_classes(frame, label_column, "after removing duplicates and test-set overlap" if test is not None
                    else "after removing duplicates", removed + overlap)
    frames = stratified_split(frame, label_column, config)
    if test is not None:
        frames["test"] = test
    distributions["train (natural)"] = class_counts(frames["train"], label_column)
    if config.balance == "undersample":
        frames["train"] = undersample(frames["train"], label_column, config.minority_share, config.seed)
    elif config.balance == "upsample":
        frames["train"] = upsample(frames["train"], label_column, config.minority_share, config.seed)
    if config.balance != "none":
        distributions[f"train ({config.balance}d)"] = class_counts(frames["train"], label_column)
        require_classes(frames["train"], label_column, f"in the train split after split.balance {config.balance}", 0)
    for name in ("validation", "test"):
        distributions[name] = class_counts(frames[name], label_column)
    frames = {name: f.reset_index(drop=True) for name, f in frames.items()}
    return SplitResult(frames, removed, conflicting, distributions, test_overlap_removed=overlap)


def group_split(frame: pd.DataFrame, group_column: str, config: SplitConfig) -> SplitResult:
    """Generation labs: split by prompt, so a prompt answered several times never sits in two splits.

    Exact duplicate rows are dropped first; groups are shuffled with the seed and cut by share of rows.
    """
    removed = 0
    if config.dedupe:
        deduped = frame.drop_duplicates(keep="first")
        removed, frame = len(frame) - len(deduped), deduped
    groups = frame[group_column].astype(str)
    order = pd.Series(groups.unique()).sample(frac=1.0, random_state=config.seed).tolist()
    if len(order) < 3:
        raise ValueError(f"column '{group_column}': {len(order)} distinct prompts; need at least 3 to split "
                         f"train/validation/test")
    sizes = groups.value_counts()
    cumulative = sizes.reindex(order).cumsum() / len(frame)
    train_end = config.train
    validation_end = config.train + config.validation
    assignment = pd.Series("test", index=cumulative.index)
    assignment[cumulative <= train_end] = "train"
    assignment[(cumulative > train_end) & (cumulative <= validation_end)] = "validation"
    # Tiny datasets: make sure no split is empty.
    for name, position in (("train", 0), ("validation", -2), ("test", -1)):
        if not (assignment == name).any():
            assignment.iloc[position] = name
    row_split = groups.map(assignment)
    frames = {name: frame[row_split == name].reset_index(drop=True) for name in SPLIT_NAMES}
    distributions = {"rows": {name: len(f) for name, f in frames.items()},
                     "prompts": {name: int(f[group_column].nunique()) for name, f in frames.items()}}
    return SplitResult(frames, removed, 0, distributions)
