"""The URI allow-list: scheme, bucket, whole-segment prefixes, ``..`` and symlink escapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sslmem.data.uri_policy import Location, UriNotAllowedError, UriPolicy, parse_location

POLICY = UriPolicy.of(["s3://data/sslmem", "mlflow-artifacts:/", "models:/"])


@pytest.mark.parametrize(
    "uri",
    [
        "s3://data/sslmem",
        "s3://data/sslmem/",
        "s3://data/sslmem/splits/a.json",
        "s3://data/sslmem/./splits//a.json",
        "s3://data/sslmem/x/../splits/a.json",
        "S3://data/sslmem/a.json",  # the scheme is case-insensitive
        "mlflow-artifacts:/1/models/m-1/artifacts",
        "models:/enc/3",
    ],
)
def test_allowed(uri: str) -> None:
    assert POLICY.allows(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "s3://other/sslmem/a.json",  # another bucket
        "s3://data/other/a.json",  # another prefix in the bucket
        "s3://data/sslmem-evil/a.json",  # the prefix matches whole segments only
        "s3://data/sslmem/../other/a.json",  # `..` normalised out of the prefix
        "s3://data/sslmem/%2e%2e/other/a.json",  # ... also when percent-encoded
        "s3://data/sslmem/../../../a.json",  # `..` above the root
        "s3://data/../data/sslmem/a.json",  # any escape above the root is refused outright
        "s3://user@data/sslmem/a.json",  # userinfo
        "s3://data/sslmem/a.json?versionId=1",  # query
        "s3://data/sslmem/a.json#x",  # fragment
        "gs://data/sslmem/a.json",  # another scheme, same bucket and path
        "http://data/sslmem/a.json",
        "mlflow-artifacts://other-host:5000/1/a",  # another MLflow server
        "runs:/abc/model",  # not listed
        "/etc/passwd",  # local files
        "file:///etc/passwd",
        "relative/path.json",
        "",
        "s3://data/sslmem/a\\..\\b",
        "s3://data/sslmem/a\x00",
    ],
)
def test_refused(uri: str) -> None:
    assert not POLICY.allows(uri)
    with pytest.raises(UriNotAllowedError) as info:
        POLICY.check(uri, "the split manifest URI (tag sslmem.split_manifest_uri)")
    problem = info.value.problem
    assert "SSLMEM_SERVICE_ALLOWED_URI_PREFIXES" in problem
    assert "sslmem.split_manifest_uri" in problem
    if uri:
        assert uri not in problem and uri not in (info.value.fix or "")  # never echoed


def test_bucket_root_prefix_allows_the_whole_bucket_only() -> None:
    policy = UriPolicy.of(["s3://data"])
    assert policy.allows("s3://data/anything/a.json")
    assert not policy.allows("s3://data2/anything/a.json")


def test_local_prefix_follows_symlinks(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (outside / "secret.json").write_text("{}")
    (allowed / "link").symlink_to(outside)
    (allowed / "split.json").write_text("{}")
    policy = UriPolicy.of([str(allowed)])
    assert policy.allows(str(allowed / "split.json"))
    assert policy.allows(f"file://{allowed / 'split.json'}")
    assert not policy.allows(str(allowed / "link" / "secret.json"))  # the link leads outside
    assert not policy.allows(str(allowed / ".." / "outside" / "secret.json"))


def test_parse_location_normalises() -> None:
    assert parse_location("s3://b/p/./q/../r/") == Location("s3", "b", ("p", "r"))
    assert parse_location("models:/enc/3") == Location("models", "", ("enc", "3"))
    assert parse_location("s3://b/../x") is None


def test_invalid_prefix_names_the_setting_only() -> None:
    with pytest.raises(UriNotAllowedError, match="MY_SETTING") as info:
        UriPolicy.of(["s3://b/../../x"], setting="MY_SETTING")
    assert "../../x" not in str(info.value)
