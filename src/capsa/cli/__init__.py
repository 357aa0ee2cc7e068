"""The `capsa` command line: Docker's commands and flags over capsa's engine."""

# Every top-level command, by the module that registers it; main builds the
# parser of just the one being run and imports only that module.
MODULES = {
    "images": ("pull", "push", "images", "rmi", "tag", "save", "load", "import", "image", "login", "logout"),
    "run": ("run", "create", "exec", "attach"),
    "containers": ("start", "stop", "restart", "kill", "rm", "ps", "logs", "wait", "inspect", "pause",
                   "unpause", "rename", "version", "volume"),
    "inspecting": ("top", "stats", "cp", "system"),
    "networks": ("network", "port"),
    "tour": ("tour",),
}  # fmt: skip
COMMANDS = frozenset(command for commands in MODULES.values() for command in commands)
