"""The `capsa` command line: Docker's commands and flags over capsa's engine."""

# Every top-level command (each module registers its own); main builds the
# parser of just the one being run.
COMMANDS = frozenset({
    "pull", "push", "images", "rmi", "tag", "save", "load", "import", "image", "login", "logout",
    "run", "create", "exec", "attach", "start", "stop", "restart", "kill", "rm", "ps", "logs", "wait",
    "inspect", "pause", "unpause", "rename", "version", "volume", "top", "stats", "cp", "system",
    "network", "port",
})
