"""Push a release directory to the Hugging Face Hub when a repo and HF_TOKEN are configured."""

from __future__ import annotations

import os
from pathlib import Path


class PublishError(RuntimeError):
    """A release that could not be pushed; the message never contains the token."""


def push_to_hub(release_dir: Path, repo: str | None) -> str:
    """Push when a repo and HF_TOKEN are configured; otherwise say why not. Never logs the token."""
    token = os.environ.get("HF_TOKEN")
    if not repo:
        return "skipped: publish.hub_repo is not set"
    if not token:
        return f"skipped: HF_TOKEN is not set (would push to {repo})"
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo, exist_ok=True, private=True)
        api.upload_folder(folder_path=str(release_dir), repo_id=repo, commit_message="ftlab release")
    except Exception as exc:  # noqa: BLE001 - network, auth and offline errors all get the same advice
        reason = f"{type(exc).__name__}: {exc}".replace(token, "***")  # never echo the token
        raise PublishError(f"publish.hub_repo {repo!r}: push of {release_dir} failed ({reason}); the champion is "
                           f"unchanged. Check HF_TOKEN, the network and HF_HUB_OFFLINE, or unset publish.hub_repo") from None
    return f"pushed to https://huggingface.co/{repo}"
