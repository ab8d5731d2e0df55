"""The conditional store every coordination test runs on: a local directory, and SeaweedFS."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslmem.coordination.conditional_store import ConditionalStore
from tests.coordination.helpers import local_store, new_bucket, s3_store
from tests.servers import S3Server


@pytest.fixture(params=["local", pytest.param("s3", marks=[pytest.mark.s3, pytest.mark.slow])])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ConditionalStore:
    if request.param == "local":
        return local_store(tmp_path / "store")
    server: S3Server = request.getfixturevalue("s3_server")
    return s3_store(server, new_bucket(server))
