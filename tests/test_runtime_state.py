"""Library code leaves process-wide state alone: loading a classifier does not reseed the global RNGs (its new head
is still reproducible from its seed)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from tiny_models import save_tiny_bert

from ftlab_pipelines.core.config.labs import ModelConfig
from ftlab_pipelines.core.modeling import models


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> ModelConfig:
    return ModelConfig(name=str(save_tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")))


def head(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("classifier")}


def global_rng_states():
    return torch.random.get_rng_state(), random.getstate(), np.random.get_state()


def test_classifier_head_is_seeded_without_touching_the_global_rngs(tiny_bert):
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    before = global_rng_states()
    first = head(models.load_classifier(tiny_bert, ["ham", "spam"], seed=7))
    after = global_rng_states()
    assert torch.equal(before[0], after[0]) and before[1] == after[1]
    assert all(np.array_equal(a, b) for a, b in zip(before[2], after[2]))

    torch.manual_seed(99)  # whatever the global state, the seed decides the head
    again = head(models.load_classifier(tiny_bert, ["ham", "spam"], seed=7))
    other = head(models.load_classifier(tiny_bert, ["ham", "spam"], seed=8))
    assert first.keys() == again.keys() and first
    assert all(torch.equal(first[n], again[n]) for n in first)
    assert not all(torch.equal(first[n], other[n]) for n in first)
