"""Downloading the official weights from the (gated) Hugging Face repository."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from .layout import DEFAULT_LAYOUT, REPO_ID, WeightsLayout, check_layout

logger = logging.getLogger(__name__)


def download_weights(
    weights_dir: Path,
    variants: Iterable[str] = ("full",),
    token: str | None = None,
    layout: WeightsLayout = DEFAULT_LAYOUT,
    repo_id: str = REPO_ID,
    revision: str | None = None,
) -> Path:
    """Download what ``variants`` need from ``repo_id`` into ``weights_dir`` (idempotent), then check it.

    ``token`` is a Hugging Face token (the repository may be gated); ``None`` uses the local login.
    """
    from huggingface_hub import snapshot_download

    variants = list(dict.fromkeys(variants))
    if not variants:
        raise ValueError("download_weights needs at least one variant")
    patterns = list(dict.fromkeys(p for variant in variants for p in layout.allow_patterns(variant)))
    logger.info("downloading %s (%s) into %s", repo_id, ", ".join(variants), weights_dir)
    snapshot_download(
        repo_id=repo_id, revision=revision, allow_patterns=patterns, local_dir=str(weights_dir), token=token
    )
    for variant in variants:
        check_layout(weights_dir, variant, layout)
    return Path(weights_dir)
