"""Running the capsa CLI in image tests: one store root per test, and the
registry settings (credentials, certs.d, config file) kept in the test's
own directory through capsa's environment variables."""

import os
import subprocess

from runtimes import ROOT, capsa_command

TIMEOUT = 120


class Capsa:
    def __init__(self, directory):
        self.dir = str(directory)
        self.root = os.path.join(self.dir, "root")
        self.env = dict(os.environ, CAPSA_CONFIG=os.path.join(self.dir, "config"),
                        CAPSA_CERTS_D=os.path.join(self.dir, "certs.d"),
                        CAPSA_CONFIG_FILE=os.path.join(self.dir, "capsa.json"),
                        PYTHONPATH=os.path.join(ROOT, "src"))  # fmt: skip

    def __call__(self, *args: str, check: bool = True, input: str | None = None,  # noqa: A002
                 ) -> subprocess.CompletedProcess:  # fmt: skip
        result = subprocess.run([*capsa_command(), "--root", self.root, *args], env=self.env, text=True,
                                capture_output=True, timeout=TIMEOUT, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL)  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(f"capsa {' '.join(args)} exited {result.returncode}:\n"
                                 f"stdout: {result.stdout}\nstderr: {result.stderr}")  # fmt: skip
        return result

    def fails(self, *args: str, input: str | None = None) -> str:  # noqa: A002
        """The one-line error of a command that must fail."""
        result = self(*args, check=False, input=input)
        assert result.returncode != 0, f"capsa {' '.join(args)} succeeded:\n{result.stdout}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("capsa: "), result.stderr
        return lines[0]

    def store(self):
        from capsa.images.store import ImageStore

        return ImageStore(self.root)
