"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import S3Server, start_seaweedfs


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server (SeaweedFS) for the whole session; see tests/servers.py."""
    with start_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
