"""capsa-shim: the monitor of one container (as conmon, containerd-shim-runc-v2).

The engine starts one shim per container and forgets it; the shim outlives
the engine. It runs the OCI runtime's create and start, holds the
container's stdio (pipes, or the pty master from the console socket),
writes the json-file log, reaps the init as its child subreaper, records the
exit, applies the restart policy, runs healthchecks and execs, and serves
<state-dir>/shim.sock (see protocol.py) until told to shut down.

Modules, one role each: main (flags, daemonize, the start-up answer),
options, service (the lifecycle and the socket's ops), runtime (the runtime's
command line), forked_runtime (capsa-runtime's zygote), streams (stdio,
attachers), logfile (json-file), server (the socket), protocol (requests,
replies, frames), loop (epoll, timers, SIGCHLD), restart, health, execs
(exec'd processes and their clients), oom, records (the files the engine
reads).

Every running container keeps its shim, so what an idle shim holds is what
each container costs (docs/benchmarks.md compares it with conmon and
containerd's shim). The shim's modules therefore import only what is built
into the interpreter (posix, _socket, _signal, select, _json, _heapq,
_struct), never the modules written in Python over them: os alone, with the
collections.abc it loads, is 0.27 MiB of every shim. capsa's modules that
the shim shares with the runtime (atomicfile, linux.proc, linux._libc,
linux.tty, linux.fdpass, runtime.log) keep to the same rule, and the runtime
itself runs in forks of a short-lived child, never in the shim
(forked_runtime). A unit test holds them to it (test_shim_options.py,
test_the_shim_imports_only_the_lean_path).

If the shim dies (SIGKILL, a crash), what it knew is on disk: shim.json
names the init (pid plus start time), exit.json the last exit if one was
recorded. An engine that finds the shim gone (shim.json's shim_pid no longer
alive with shim_start_time) and no exit.json treats the container as exited
with an unknown exit code: it kills what is left (`<runtime> kill`, then
`<runtime> delete --force`), and reports the exit code as unknown (Docker
uses 255 for that). With exit.json present, that record is the exit.
"""
