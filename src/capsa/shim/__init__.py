"""capsa-shim: the monitor of one container (as conmon, containerd-shim-runc-v2).

The engine starts one shim per container and forgets it; the shim outlives
the engine. It runs the OCI runtime's create and start, holds the
container's stdio (pipes, or the pty master from the console socket),
writes the json-file log, reaps the init as its child subreaper, records the
exit, applies the restart policy, runs healthchecks and execs, and serves
<state-dir>/shim.sock (see protocol.py) until told to shut down.

Modules, one role each: main (flags, daemonize, the start-up answer),
options, service (the lifecycle and the socket's ops), runtime (the runtime's
command line), streams (stdio, attachers), logfile (json-file), server (the
socket), protocol (requests, replies, frames), loop (epoll, timers,
SIGCHLD), restart, health, execs (exec'd processes and their clients), oom,
records (the files the engine reads).

If the shim dies (SIGKILL, a crash), what it knew is on disk: shim.json
names the init (pid plus start time), exit.json the last exit if one was
recorded. An engine that finds the shim gone (shim.json's shim_pid no longer
alive with shim_start_time) and no exit.json treats the container as exited
with an unknown exit code: it kills what is left (`<runtime> kill`, then
`<runtime> delete --force`), and reports the exit code as unknown (Docker
uses 255 for that). With exit.json present, that record is the exit.
"""
