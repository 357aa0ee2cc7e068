"""Image-test fixtures: Debian's distribution registry in four kinds, each
started on 127.0.0.1 the first time a test asks for it and kept for the
session, and OCI layouts built here (oci_images.py).

    open_registry        no auth, HTTP
    htpasswd_registry    Basic auth: .username "capsa", .password "s3cret"
    token_registry       Bearer tokens from a token server run here;
                         .token_requests counts what it answered,
                         .token_server.requests records each one
    tls_registry         no auth, HTTPS; .ca is the CA's PEM,
                         .cert_dir a directory holding only ca.crt
                         (skopeo --cert-dir), .write_certs_d(DIR) writes
                         DIR/HOST:PORT/ca.crt
    fresh_registry       an open registry for one test only
    work_dir             a directory for one test only (a pathlib.Path)
    busybox_image, multilayer_image   layouts built once per session

Each has .host ("127.0.0.1:PORT"), .url, .storage (the filesystem driver's
root: .blob_path(DIGEST) is where a blob's bytes are), .pid, .log and
.skopeo_flags(PREFIX). The registries are shared by the session: a test
that corrupts a blob uses an image of its own (scratch_layout with unique
content) or fresh_registry, so no other test sees it.

Everything lives under one /tmp/capsa-images-* directory, removed at the
end once every registry and token server has been stopped by its pid.
These tests need root (umoci's unpack keeps owners only as root).
"""

import os
import pathlib
import shutil
import tempfile

import pytest

from oci_images import busybox_layout, multilayer_layout
from registries import REGISTRY, start_registry

PROGRAMS = (REGISTRY, "skopeo", "umoci")


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture(autouse=True)
def _needs_root():
    _require_root()


@pytest.fixture(scope="session")
def images_session():
    """The session's directory for registries and layouts (removed at the end)."""
    _require_root()
    missing = [program for program in PROGRAMS if shutil.which(program) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (scripts/setup installs them)")
    base = tempfile.mkdtemp(prefix="capsa-images-", dir="/tmp")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _registry(kind: str, base: str):
    registry = start_registry(kind, tempfile.mkdtemp(prefix=f"{kind}-", dir=base))
    try:
        yield registry
    finally:
        registry.close()


@pytest.fixture(scope="session")
def open_registry(images_session):
    yield from _registry("open", images_session)


@pytest.fixture(scope="session")
def htpasswd_registry(images_session):
    yield from _registry("htpasswd", images_session)


@pytest.fixture(scope="session")
def token_registry(images_session):
    yield from _registry("token", images_session)


@pytest.fixture(scope="session")
def tls_registry(images_session):
    yield from _registry("tls", images_session)


@pytest.fixture
def fresh_registry(images_session):
    """An open registry of this test's own, stopped and removed after it."""
    registry = start_registry("open", tempfile.mkdtemp(prefix="fresh-", dir=images_session))
    try:
        yield registry
    finally:
        registry.close()
        shutil.rmtree(registry.dir, ignore_errors=True)


@pytest.fixture
def work_dir(images_session) -> pathlib.Path:
    """A directory for one test (under the session's, removed after the test)."""
    path = tempfile.mkdtemp(prefix="test-", dir=images_session)
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def busybox_image(images_session):
    """busybox_layout() in the session's layouts, tag "latest"."""
    return busybox_layout(os.path.join(images_session, "layouts", "busybox"))


@pytest.fixture(scope="session")
def multilayer_image(images_session):
    """multilayer_layout(): tag "latest" has the zstd layer, tag "gzip" the
    same layers all gzip (umoci reads that one; same diff_ids)."""
    path = os.path.join(images_session, "layouts", "multilayer")
    multilayer_layout(path, "gzip", zstd=False)
    return multilayer_layout(path, "latest")


@pytest.fixture
def capsa(work_dir):
    """The capsa CLI with a store and settings of this test's own."""
    from capsa_cli import Capsa

    return Capsa(work_dir)
