"""The CLI's list of commands is the one its modules register, and building
just one command's parser parses as the whole one does."""

from capsa.cli import COMMANDS
from capsa.cli.main import build_parser


def test_commands_list_matches_the_parser():
    choices = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001
    assert set(choices) == COMMANDS


def test_one_command_parser_parses_the_same():
    argv = ["run", "-d", "--name", "web", "-e", "A=1", "busybox", "sh", "-c", "true"]
    assert vars(build_parser("run").parse_args(argv)) == vars(build_parser().parse_args(argv))


def test_each_command_is_listed_under_the_module_that_registers_it():
    import importlib

    from capsa.cli import MODULES
    from capsa.cli.main import _Skipped

    class Recorder:
        def __init__(self):
            self.names = []

        def add_parser(self, name, **_kwargs):
            self.names.append(name)
            return _Skipped()

    for module, names in MODULES.items():
        recorder = Recorder()
        importlib.import_module(f"capsa.cli.{module}").register(recorder)
        assert sorted(recorder.names) == sorted(names), module
