"""Network commands with Docker's names and flags: network create, ls,
inspect, rm, prune, connect, disconnect; and port."""

import sys

from capsa.cli.containers import open_engine
from capsa.errors import CapsaError


def register(commands) -> None:
    from capsa.cli.main import Parser

    _port(commands.add_parser("port"))
    network = commands.add_parser("network", help="manage networks").add_subparsers(
        dest="network_command", metavar="COMMAND", parser_class=Parser)  # fmt: skip
    for name, adder, aliases in (("create", _create, []), ("ls", _ls, ["list"]), ("inspect", _inspect, []),
                                 ("rm", _rm, ["remove"]), ("prune", _prune, []), ("connect", _connect, []),
                                 ("disconnect", _disconnect, [])):  # fmt: skip
        adder(network.add_parser(name, aliases=aliases))


def _create(p) -> None:
    p.add_argument("-d", "--driver", default="bridge")
    p.add_argument("--subnet")
    p.add_argument("--gateway")
    p.add_argument("--internal", action="store_true")
    p.add_argument("-l", "--label", action="append", default=[])
    p.add_argument("name", metavar="NETWORK")
    p.set_defaults(handler=cmd_create)


def cmd_create(args) -> int:
    from capsa.cli.main import fail

    if args.driver != "bridge":
        return fail(f'plugin "{args.driver}" not found: capsa networks use the bridge driver')
    if args.gateway and not args.subnet:
        return fail("a gateway needs a subnet (--subnet)")
    engine = open_engine(args)
    labels = dict(label.partition("=")[::2] for label in args.label)
    network = engine.wiring.networks.create(args.name, args.subnet, args.gateway, args.internal, labels)
    print(network.id)
    return 0


def _ls(p) -> None:
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.set_defaults(handler=cmd_ls)


def cmd_ls(args) -> int:
    networks = open_engine(args).wiring.networks
    networks.default()  # listed from the start, as Docker's bridge is
    found = networks.all()
    ident = (lambda n: n.id) if args.no_trunc else (lambda n: n.short_id)
    if args.quiet:
        for network in found:
            print(ident(network))
        return 0
    from capsa.cli.images import print_table

    print_table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"], [[ident(n), n.name, n.driver, "local"] for n in found])
    return 0


def _inspect(p) -> None:
    p.add_argument("names", nargs="+", metavar="NETWORK")
    p.set_defaults(handler=cmd_inspect)


def cmd_inspect(args) -> int:
    from capsa.cli.main import print_inspected

    wiring = open_engine(args).wiring
    return print_inspected(args.names, lambda name: wiring.describe(wiring.networks.lookup(name)), "network")


def _rm(p) -> None:
    p.add_argument("-f", "--force", action="store_true", help="no error when the network does not exist")
    p.add_argument("names", nargs="+", metavar="NETWORK")
    p.set_defaults(handler=cmd_rm)


def cmd_rm(args) -> int:
    from capsa.errors import NotFound

    wiring = open_engine(args).wiring
    status = 0
    for name in args.names:
        try:
            wiring.remove_network(wiring.networks.lookup(name))
            print(name)
        except NotFound as err:
            if not args.force:
                sys.stderr.write(f"capsa: {err}\n")
                status = 1
        except CapsaError as err:
            sys.stderr.write(f"capsa: {err}\n")
            status = 1
    return status


def _prune(p) -> None:
    p.add_argument("-f", "--force", action="store_true")
    p.set_defaults(handler=cmd_prune)


def cmd_prune(args) -> int:
    from capsa.cli.main import confirm

    if not args.force and not confirm("This will remove all custom networks not used by at least one container."):
        return 0
    removed = open_engine(args).wiring.prune()
    if removed:
        print("Deleted Networks:\n" + "\n".join(removed))
    return 0


def _connect(p) -> None:
    p.add_argument("--alias", action="append", default=[])
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(handler=cmd_connect)


def cmd_connect(args) -> int:
    engine = open_engine(args)
    network = engine.wiring.networks.lookup(args.network)
    engine.wiring.join(engine.containers.lookup(args.container), network, args.alias)
    return 0


def _disconnect(p) -> None:
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    p.set_defaults(handler=cmd_disconnect)


def cmd_disconnect(args) -> int:
    engine = open_engine(args)
    network = engine.wiring.networks.lookup(args.network)
    engine.wiring.leave(engine.containers.lookup(args.container), network)
    return 0


# -- port


def _port(p) -> None:
    p.add_argument("container", metavar="CONTAINER")
    p.add_argument("private", nargs="?", metavar="PRIVATE_PORT[/PROTO]")
    p.set_defaults(handler=cmd_port)


def cmd_port(args) -> int:
    """Docker's `port`: "80/tcp -> 0.0.0.0:8080" per mapping, or the host
    addresses of one private port."""
    from capsa.errors import NotFound
    from capsa.network import ports

    engine = open_engine(args)
    container = engine.refresh(engine.containers.lookup(args.container))
    mappings = ports.from_records(container.config.get("ports")) if container.state in ("running", "paused") else []
    if args.private:
        port, _, protocol = args.private.partition("/")
        chosen = [m for m in mappings if str(m.container_port) == port and m.protocol == (protocol or "tcp")]
        if not chosen:
            raise NotFound(f"No public port '{port}/{protocol or 'tcp'}' published for {args.container}")
        for m in chosen:
            print(f"{m.host_address()}:{m.host_port}")
        return 0
    for m in mappings:
        print(f"{m.container_port}/{m.protocol} -> {m.host_address()}:{m.host_port}")
    return 0
