"""The converted-model cache: one directory per GGUF content, found again without converting."""

from __future__ import annotations

from ftlab_pipelines.core.config.settings import Settings
from ftlab_pipelines.core.modeling import offline_models


def test_a_cached_conversion_is_named_by_the_gguf_content_and_reused(tmp_path, monkeypatch):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 9000)
    tag = offline_models.content_tag(gguf)
    converted = []
    monkeypatch.setattr(offline_models, "convert_gguf",
                        lambda src, out: (converted.append(src), out.mkdir(), (out / "config.json").write_text("{}")))
    cache = tmp_path / "cache"
    first = offline_models.cached_conversion("m", gguf, cache)
    assert first == str(cache / f"m-{tag}") and converted == [gguf]
    assert offline_models.cached_conversion("m", gguf, cache) == first and len(converted) == 1  # reused

    gguf.write_bytes(gguf.read_bytes()[:-1] + b"x")  # a new package version's file: converted anew, beside the old
    assert offline_models.content_tag(gguf) != tag
    assert offline_models.cached_conversion("m", gguf, cache) != first and len(converted) == 2


def test_the_model_cache_is_per_user_unless_set():
    assert Settings.from_env({"XDG_CACHE_HOME": "/c", "FTLAB_HOME": "/h"}).model_cache.as_posix() == "/c/ftlab/models"
    assert Settings.from_env({"FTLAB_MODEL_CACHE": "/m"}).model_cache.as_posix() == "/m"
