"""The resume state of a pipeline train step, kept in the object store across retries.

A KFP train step runs in a fresh pod each attempt, so its local ``resume.pt`` dies with a
preempted or failed pod. :class:`StoreResume` mirrors that file to the object store every
``training.resume_every_epochs`` epochs under a key derived from the step's identity -- the run
description (recipe, dataset, split hash, role, seed; see
:func:`~sslmem.training.train.run_description`) and the code version -- so a retry of the same
step, and only of the same step, finds it and continues. Upload is one PUT (atomic per object in
S3; a temp file and rename in a local store), so a reader sees the previous state or the new one,
never a partial one. The file is the unchanged resume format, read weights-only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from sslmem.data.store import ObjectStore
from sslmem.errors import CheckpointError, StoreError
from sslmem.training.resume import ResumeState, load_resume_state

__all__ = ["RESUME_STORE_PREFIX", "StoreResume", "resume_key"]

logger = logging.getLogger(__name__)

#: Store prefix of the resume states of train steps in progress.
RESUME_STORE_PREFIX = "train-resume"


def resume_key(run: str, code_version: str) -> str:
    """The store key of a train step's resume state.

    Args:
        run: The run description (canonical JSON of recipe, dataset, split hash, role, seed).
        code_version: The code identity (:func:`sslmem.provenance.code_version`): a state
            written by other code is never continued.

    Returns:
        ``"train-resume/<sha256 of both>.pt"``; deterministic, so every attempt of a step gets
        the same key and any other step another one.

    """
    identity = json.dumps({"code_version": code_version, "run": run}, sort_keys=True)
    return f"{RESUME_STORE_PREFIX}/{hashlib.sha256(identity.encode()).hexdigest()}.pt"


class StoreResume:
    """A train step's resume file, mirrored to one object of the store.

    Args:
        store: The object store (``SSLMEM_STORE_URI``).
        key: The object's key (:func:`resume_key`).

    """

    def __init__(self, store: ObjectStore, key: str) -> None:
        self.store = store
        self.key = key

    @property
    def uri(self) -> str:
        """The object's URI (for logs and errors)."""
        return self.store.uri(self.key)

    def fetch(self, path: Path) -> ResumeState | None:
        """Download the resume state of an earlier attempt to ``path``, if there is one.

        Returns:
            The validated state, or ``None`` when no attempt left one (``path`` untouched).

        Raises:
            StoreError: The store cannot be read (a retry must not silently restart).
            CheckpointError: The object is not a usable resume file; the fix names it.

        """
        if not self.store.exists(self.key):
            logger.info("no resume state at %s: training from epoch 0", self.uri)
            return None
        self.store.get_file(self.key, path)
        try:
            state = load_resume_state(path)
        except CheckpointError as exc:
            raise CheckpointError(
                f"the resume state {self.uri} of this train step cannot be used: {exc.problem}",
                f"delete {self.uri} to train this step from epoch 0",
            ) from exc
        logger.info("resuming from %s after epoch %d", self.uri, state.epoch)
        return state

    def upload(self, path: Path, epoch: int) -> None:
        """Mirror the resume file ``path`` written after ``epoch`` epochs (one atomic PUT).

        A failed upload is logged, not raised: training goes on, and a retry resumes from the
        previous upload (the store client has already retried).
        """
        try:
            self.store.put_file(self.key, path)
        except StoreError as exc:
            logger.warning("could not upload the resume state after epoch %d: %s", epoch, exc)
            return
        logger.info("uploaded the resume state after epoch %d to %s", epoch, self.uri)

    def discard(self) -> None:
        """Delete the object once the step has written its output (nothing left to resume).

        A failed delete is logged, not raised: the output is already written, and a stale
        state is only storage (a later run of the same step would resume from it and end
        with the same encoder).
        """
        try:
            self.store.delete(self.key)
        except StoreError as exc:
            logger.warning("could not delete the finished resume state %s: %s", self.uri, exc)
