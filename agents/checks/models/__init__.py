"""Fitted parameters of the learned detectors, each pinned by its SHA-256 (see agents/checks/learned.py).

Files here are written by bench/train_detectors.py and read-only at run time; nothing is downloaded.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent


class ModelIntegrityError(RuntimeError):
    """A shipped model file is missing or is not the one this code was tested with."""


def read_verified(name: str, sha256: str) -> bytes:
    """The bytes of a shipped model file, refused unless they hash to `sha256` (fail closed)."""
    path = MODEL_DIR / name
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelIntegrityError(f"model file {name} cannot be read: {exc}") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise ModelIntegrityError(f"model file {name} has sha256 {digest}, expected {sha256}")
    return raw
