"""Push a saved checkpoint folder (weights, config, module files, card, plots) to the Hugging Face Hub."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_COMMIT_MESSAGE = "Upload evalign checkpoint"


class HubOfflineError(ConnectionError, ValueError):
    """The Hub is in offline mode: a ConnectionError, and a user error (one line, exit 2) on the command line."""


def check_push_target(repo_id: str) -> None:
    """Raise before any work if ``repo_id`` cannot be pushed to: malformed (``ValueError``) or the Hub is in
    offline mode (``ConnectionError``). Training calls it before the first step, not after the last."""
    from huggingface_hub import constants
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"push_to_hub: repo_id={repo_id!r} is invalid: expected 'namespace/name'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"push_to_hub: repo_id={repo_id!r} is invalid: {err}") from None
    if constants.is_offline_mode():
        raise HubOfflineError(
            f"push_to_hub({repo_id!r}): the Hub is in offline mode (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set "
            "when huggingface_hub was imported); unset it to push."
        )


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    revision: str | None = None,
):
    """Create ``repo_id`` if needed and upload every file of ``folder`` in one commit.

    ``folder`` is what ``save_pretrained`` (plus ``cards.write_model_card``) wrote: ``config.json``,
    ``model.safetensors``, the bundled module files and ``README.md``. A ``revision`` other than
    ``main`` is created as a branch from ``main`` when it does not exist yet. The endpoint is
    ``HF_ENDPOINT`` (default https://huggingface.co), read by huggingface_hub at import time.

    Returns huggingface_hub's ``CommitInfo`` (``.commit_url``, ``.oid``, ``.repo_url``).
    Raises FileNotFoundError for a missing/empty folder or one without ``config.json``, ValueError
    for a malformed ``repo_id``, and ConnectionError when the Hub is offline (HF_HUB_OFFLINE) or the
    endpoint cannot be reached.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"push_to_hub: folder {folder} does not exist or is not a directory")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"push_to_hub: {folder} has no config.json; save the model with save_pretrained first")
    check_push_target(repo_id)

    try:  # huggingface_hub 2.x talks through httpx2, 1.x through httpx
        import httpx2 as http_client
    except ImportError:  # pragma: no cover - depends on the installed hub version
        import httpx as http_client
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import OfflineModeIsEnabled

    from ..utils.io_utils import MANIFEST_NAME

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision not in (None, constants.DEFAULT_REVISION):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message,
            revision=revision,
            ignore_patterns=[MANIFEST_NAME],  # evalign's local record of what it wrote, not part of the model
        )
    except OfflineModeIsEnabled as e:
        raise ConnectionError(f"push_to_hub({repo_id!r}): the Hub is in offline mode: {e}") from e
    except (http_client.ConnectError, http_client.TimeoutException) as e:
        raise ConnectionError(
            f"push_to_hub({repo_id!r}): cannot reach the Hub endpoint {api.endpoint} ({type(e).__name__}: {e})"
        ) from e
