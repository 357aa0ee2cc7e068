"""Which runtimes the shim runs in forks of its zygote (the fast path): only
the capsa-runtime launcher that scripts/install-launchers writes, for this
source tree, on the interpreter binary the shim runs on; and the zygote."""

import importlib.machinery
import importlib.util
import os

import pytest

from capsa.shim.forked_runtime import LAUNCHER, Zygote, is_launcher, recognises
from capsa.shim.runtime import Runtime, wait_child

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def installer():
    path = os.path.join(ROOT, "scripts", "install-launchers")
    loader = importlib.machinery.SourceFileLoader("install_launchers", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def launcher(installer, tmp_path, module: str, venv_python: str | None = None) -> str:
    path = str(tmp_path / "launcher")
    installer.write_launcher(path, module, venv_python)
    with open(path) as f:
        return f.read()


def test_the_runtime_launcher_as_installed_is_recognised(installer, tmp_path):
    text = launcher(installer, tmp_path, "capsa.runtime.cli")
    assert is_launcher(text, installer.INTERPRETER, installer.SRC)


def test_the_interpreter_may_be_named_through_a_symlink(installer, tmp_path):
    os.symlink(installer.INTERPRETER, tmp_path / "python3")
    text = LAUNCHER.format(python=str(tmp_path / "python3"), src=installer.SRC)
    assert is_launcher(text, installer.INTERPRETER, installer.SRC)


def test_anything_else_is_run_as_a_program(installer, tmp_path):
    text = launcher(installer, tmp_path, "capsa.runtime.cli")
    assert not is_launcher(text, "/usr/bin/python3.11", installer.SRC)  # another binary
    assert not is_launcher(text, installer.INTERPRETER, "/elsewhere/src")  # another checkout
    assert not is_launcher(text + "print('more')\n", installer.INTERPRETER, installer.SRC)
    assert not is_launcher(text.replace(" -IS", " -I"), installer.INTERPRETER, installer.SRC)
    shim = launcher(installer, tmp_path, "capsa.shim.main")
    assert not is_launcher(shim, installer.INTERPRETER, installer.SRC)
    cli = launcher(installer, tmp_path, "capsa.runtime.cli", venv_python="/venv/bin/python")
    assert not is_launcher(cli, "/venv/bin/python", installer.SRC)


def test_runc_and_a_shim_without_the_launchers_flags_exec(tmp_path):
    # pytest runs without -IS: even the real launcher is exec'd from here.
    for path in ("/usr/local/bin/capsa-runtime", "/usr/sbin/runc", str(tmp_path / "missing")):
        assert not recognises(path)
        zygote = Zygote()
        assert Runtime(path, None, [], "c1", zygote).zygote is None  # let go: it is exec'd
        _, status = os.waitpid(zygote.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


@pytest.fixture
def stdio():
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    yield (null, null, null)
    os.close(null)


def test_the_zygote_runs_runtime_commands_in_forks_that_are_not_the_shims(stdio, tmp_path, capsys):
    with capsys.disabled():  # the worker prints through sys.stdout, as on fd 1
        zygote = Zygote()
    try:
        worker = zygote.spawn(["--version"], stdio)
        assert wait_child(worker, 10) == 0
        with pytest.raises(ChildProcessError):
            os.waitpid(worker.pid, os.WNOHANG)  # the zygote's child, reaped by it
        missing = zygote.spawn(["--root", str(tmp_path), "state", "nope"], stdio)
        assert wait_child(missing, 10) == 1
    finally:
        zygote.close()
    _, status = os.waitpid(zygote.pid, 0)  # let go, it ends
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_runtime_whose_zygote_died_execs_instead(stdio):
    runtime = Runtime("/bin/true", None, [], "c1")
    runtime.zygote = Zygote()
    os.kill(runtime.zygote.pid, 9)
    os.waitpid(runtime.zygote.pid, 0)
    runtime.start()  # /bin/true start c1: exit 0
    assert runtime.zygote is None
