"""Image references: Docker's grammar, normalisation and familiar names."""

import pytest

from capsa.errors import InvalidArgument
from capsa.images import reference

DIGEST = "sha256:" + "ab" * 32

NORMALISED = [
    ("busybox", "docker.io/library/busybox:latest", "busybox"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox"),
    ("library/busybox", "docker.io/library/busybox:latest", "busybox"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "busybox"),
    ("index.docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox"),
    ("user/app", "docker.io/user/app:latest", "user/app"),
    ("docker.io/library/a/b", "docker.io/library/a/b:latest", "library/a/b"),
    ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "127.0.0.1:5000/x"),
    ("localhost/app:v1", "localhost/app:v1", "localhost/app"),
    ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1", "localhost:5000/a/b"),
    ("example.com/team/app", "example.com/team/app:latest", "example.com/team/app"),
    ("Example.com/app", "Example.com/app:latest", "Example.com/app"),
    ("[::1]:5000/app", "[::1]:5000/app:latest", "[::1]:5000/app"),
    ("host:5000/a/b@" + DIGEST, "host:5000/a/b@" + DIGEST, "host:5000/a/b"),
    ("busybox:v1@" + DIGEST, "docker.io/library/busybox:v1@" + DIGEST, "busybox"),
    ("docker.io/a.b__c--d-e_f/x", "docker.io/a.b__c--d-e_f/x:latest", "a.b__c--d-e_f/x"),
    ("foo_bar/a.b-c__d", "docker.io/foo_bar/a.b-c__d:latest", "foo_bar/a.b-c__d"),
    ("localhost:5000", "docker.io/library/localhost:5000", "localhost"),  # a tag, as Docker
    ("app:" + "T" * 128, "docker.io/library/app:" + "T" * 128, "app"),
]


@pytest.mark.parametrize("text,full,familiar", NORMALISED)
def test_normalisation(text, full, familiar):
    ref = reference.parse(text)
    assert str(ref) == full
    assert ref.familiar_name == familiar
    assert reference.parse(str(ref)) == ref


def test_fields_and_defaults():
    ref = reference.parse("busybox")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("docker.io", "library/busybox", "latest", None)
    assert ref.name == "docker.io/library/busybox"
    assert ref.familiar() == "busybox:latest"
    pinned = reference.parse("127.0.0.1:5000/x@" + DIGEST)
    assert pinned.tag is None and pinned.digest == DIGEST
    assert pinned.familiar() == f"127.0.0.1:5000/x@{DIGEST}"


def test_with_tag_and_with_digest_replace_what_names_the_image():
    ref = reference.parse("busybox:v1@" + DIGEST)
    assert str(ref.with_tag("v2")) == "docker.io/library/busybox:v2"
    assert str(ref.with_digest(DIGEST)) == f"docker.io/library/busybox@{DIGEST}"
    with pytest.raises(InvalidArgument, match="invalid tag"):
        ref.with_tag("-bad")
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        ref.with_digest("sha256:abc")


BAD = [
    ("", "at least one component"),
    ("Busybox", "must be lowercase"),
    ("user/App", "must be lowercase"),
    ("127.0.0.1:5000/App", "must be lowercase"),
    ("busybox:", "invalid tag"),
    ("busybox:-x", "invalid tag"),
    ("busybox:" + "a" * 129, "invalid tag"),
    ("busybox:a b", "invalid tag"),
    ("busybox@", "invalid digest"),
    ("busybox@sha256:abc", "invalid digest"),
    ("busybox@md5:" + "a" * 32, "only sha256"),
    ("a//b", "components"),
    ("/a", "components"),
    ("a/", "components"),
    ("host:5000/", "components"),
    ("a..b", "components"),
    ("a___b", "components"),
    ("-a", "components"),
    ("a-", "components"),
    (":tag", "components"),
    ("host:port/x", "not a valid registry host"),
    ("-host.com/x", "not a valid registry host"),
    ("my_host.com/x", "not a valid registry host"),
    ("ab" * 32, "image ID"),
    ("a/" * 130 + "b", "255 characters"),
]


@pytest.mark.parametrize("text,why", BAD)
def test_bad_references_are_one_line_errors(text, why):
    with pytest.raises(InvalidArgument) as err:
        reference.parse(text)
    message = str(err.value)
    assert message.startswith(f'invalid reference format: "{text}"')
    assert why in message
    assert "\n" not in message
