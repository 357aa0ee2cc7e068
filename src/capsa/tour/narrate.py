"""The tour's voice: a heading per era, a few lines of explanation, what
capsa is about to run, and what happened.

Colour (ANSI escapes) only when the stream is a terminal, so the same words
read well in a pipe, a log file or a test:

    voice = Narrator(sys.stdout)
    voice.heading(2, "namespaces", "2002-2013")
    voice.explain("A namespace gives a process its own view of one kind of resource.")
    voice.run("unshare(CLONE_NEWPID|CLONE_NEWNS)")
    voice.show(["PID   USER     COMMAND", "    1 root     sh"])
    voice.result("the shell is pid 1")
"""

import textwrap

WIDTH = 78
_STYLES = {"heading": "1;36", "run": "33", "result": "32", "show": "2", "note": "35", "failed": "31"}


class Narrator:
    def __init__(self, stream, colour: bool | None = None):
        self.stream = stream
        self.colour = stream.isatty() if colour is None else colour
        self._after_heading = False

    def _paint(self, style: str, text: str) -> str:
        return f"\033[{_STYLES[style]}m{text}\033[0m" if self.colour else text

    def _write(self, text: str = "") -> None:
        self._after_heading = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def heading(self, number: int, title: str, year: str) -> None:
        line = f"── {number}. {title} ({year}) "
        self._write()
        self._write(self._paint("heading", line + "─" * max(0, WIDTH - len(line))))
        self._after_heading = True

    def explain(self, text: str) -> None:
        """Paragraphs of explanation, wrapped to the tour's width."""
        if not self._after_heading:
            self._write()
        for index, paragraph in enumerate(textwrap.dedent(text).strip().split("\n\n")):
            if index:
                self._write()
            self._write(textwrap.fill(" ".join(paragraph.split()), WIDTH, break_on_hyphens=False))

    def run(self, what: str) -> None:
        """The system call or command capsa is about to make."""
        self._write(self._paint("run", f"  $ {what}"))

    def show(self, lines) -> None:
        """Output of what ran, indented (at most 12 lines of it)."""
        lines = list(lines)
        if len(lines) > 12:
            lines = lines[:11] + [f"... ({len(lines) - 11} more lines)"]
        for line in lines:
            self._write(self._paint("show", f"    │ {line}"))

    def show_words(self, words) -> None:
        """Words (a directory listing, interface names) wrapped into a few lines."""
        self.show(textwrap.wrap(" ".join(words), WIDTH - 6, break_on_hyphens=False) or ["(nothing)"])

    def result(self, text: str) -> None:
        self._write(self._paint("result", f"  → {text}"))

    def note(self, text: str) -> None:
        self._write(self._paint("note", f"  note: {text}"))

    def failed(self, text: str) -> None:
        self._write(self._paint("failed", f"  ✗ {text}"))

    def prompt(self, text: str) -> None:
        """A question on the same line as the answer the user types."""
        self.stream.write(self._paint("heading", text) + " ")
        self.stream.flush()

    def line(self, text: str = "") -> None:
        self._write(text)
