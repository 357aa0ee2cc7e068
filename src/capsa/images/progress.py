"""What a pull or push shows while it works: a bar per layer (rich) when
stdout is a terminal, Docker's plain "<id>: <status>" lines otherwise, or
nothing (-q). Calls may come from several download threads at once."""

import sys
import threading


class Quiet:
    def say(self, line: str) -> None:
        pass

    def layer(self, digest: str, size: int) -> "Quiet":
        return self

    def status(self, text: str) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def close(self) -> None:
        pass


class Lines(Quiet):
    """One line per state change of a layer, as `docker pull` prints when
    its output is not a terminal."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self._lock = threading.Lock()

    def say(self, line: str) -> None:
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    def layer(self, digest: str, size: int) -> "_Line":
        return _Line(self, digest.partition(":")[2][:12])


class _Line(Quiet):
    def __init__(self, lines: Lines, short: str):
        self.lines = lines
        self.short = short

    def status(self, text: str) -> None:
        self.lines.say(f"{self.short}: {text}")


class Bars(Lines):
    """A rich progress bar per layer, with its status."""

    def __init__(self):
        super().__init__()
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TextColumn("{task.fields[status]}"), console=Console(),
                                 transient=False)  # fmt: skip
        self.progress.start()

    def say(self, line: str) -> None:
        self.progress.console.print(line, highlight=False, markup=False)

    def layer(self, digest: str, size: int) -> "_Bar":
        task = self.progress.add_task(digest.partition(":")[2][:12], total=size or None, status="Waiting")
        return _Bar(self.progress, task)

    def close(self) -> None:
        self.progress.stop()


class _Bar(Quiet):
    def __init__(self, progress, task):
        self.progress = progress
        self.task = task

    def status(self, text: str) -> None:
        self.progress.update(self.task, status=text)

    def advance(self, count: int) -> None:
        self.progress.update(self.task, advance=count)


def for_output(quiet: bool) -> Quiet:
    if quiet:
        return Quiet()
    return Bars() if sys.stdout.isatty() else Lines()
