"""The shim's one event loop: epoll for descriptors, a heap of timers, SIGCHLD.

Single-threaded, as everything in capsa's fast path: callbacks run one at a
time and must not block for long (the runtime commands the shim waits for,
`kill`, `delete`, a restart's `create` and `start`, take tens of
milliseconds). SIGCHLD reaches the loop through the interpreter's wakeup fd,
so a child that exits while a callback runs is reaped on the next turn. A
callback that raises is reported to `on_error` and the loop goes on: a bug in
one op must not end the supervision of a running container.
"""

import _signal
import posix
import select
import time
from _heapq import heappop, heappush

IN = select.EPOLLIN
OUT = select.EPOLLOUT
HUP = select.EPOLLHUP | select.EPOLLERR


class Timer:
    def __init__(self, when: float, callback):
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: "Timer") -> bool:
        return self.when < other.when


class Loop:
    """Descriptors and timers; `on_sigchld` is called after SIGCHLD."""

    def __init__(self, on_sigchld, on_error):
        self.epoll = select.epoll()
        self.handlers: dict[int, object] = {}
        self.timers: list[Timer] = []
        self.running = False
        self.on_sigchld = on_sigchld
        self.on_error = on_error
        self.wakeup_r, self.wakeup_w = posix.pipe2(posix.O_NONBLOCK | posix.O_CLOEXEC)
        # A Python-level handler is needed for the C handler to write the
        # wakeup fd; it does nothing itself.
        _signal.signal(_signal.SIGCHLD, _ignore)
        _signal.set_wakeup_fd(self.wakeup_w, warn_on_full_buffer=False)
        self.add(self.wakeup_r, IN, self._wakeup)

    def add(self, fd: int, events: int, handler) -> None:
        """handler(events) is called when fd is ready."""
        self.epoll.register(fd, events)
        self.handlers[fd] = handler

    def modify(self, fd: int, events: int) -> None:
        self.epoll.modify(fd, events)

    def remove(self, fd: int) -> None:
        """Forget fd (before it is closed)."""
        if self.handlers.pop(fd, None) is not None:
            try:
                self.epoll.unregister(fd)
            except (OSError, ValueError):
                pass

    def call_later(self, delay: float, callback) -> Timer:
        timer = Timer(time.monotonic() + max(0.0, delay), callback)
        heappush(self.timers, timer)
        return timer

    def run(self) -> None:
        self.running = True
        self.on_sigchld()  # children that exited before the loop began
        while self.running:
            for fd, events in self.epoll.poll(self._timeout()):
                handler = self.handlers.get(fd)
                if handler is not None:
                    self._call(handler, events)
            self._run_due_timers()

    def stop(self) -> None:
        self.running = False

    def _timeout(self) -> float:
        while self.timers and self.timers[0].cancelled:
            heappop(self.timers)
        if not self.timers:
            return -1
        return max(0.0, self.timers[0].when - time.monotonic())

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0].when <= now:
            timer = heappop(self.timers)
            if not timer.cancelled:
                self._call(timer.callback)

    def _call(self, callback, *args) -> None:
        try:
            callback(*args)
        except Exception as err:
            self.on_error(err)

    def _wakeup(self, _events: int) -> None:
        try:
            while posix.read(self.wakeup_r, 4096):
                pass
        except BlockingIOError:
            pass
        self.on_sigchld()


def _ignore(_signum, _frame) -> None:
    pass
