"""`capsa tour`: a guided walk through the history of containers, each era
run live on this machine (the steps live in capsa.tour)."""

import os
import sys


def register(commands) -> None:
    p = commands.add_parser("tour", help="learn how containers work: a guided, live walk through their history",
                            description="A guided walk through the history of containers: every step "
                                        "explains its era, runs the real mechanism on this machine, shows "
                                        "the effect and cleans up.")  # fmt: skip
    p.add_argument("steps", nargs="*", type=int, metavar="STEP", help="run only these steps (1-7)")
    p.add_argument("--list", action="store_true", help="list the steps and exit")
    p.add_argument("--pause", action="store_true", help="wait for Enter between steps")
    p.set_defaults(handler=cmd_tour)


def cmd_tour(args) -> int:
    from capsa import tour
    from capsa.cli.main import fail
    from capsa.tour.narrate import Narrator

    numbers = args.steps or list(range(1, len(tour.STEPS) + 1))
    for number in numbers:
        tour.step(number)  # an unknown step is refused before anything runs
    if args.list:
        for line in tour.listing():
            print(line)
        return 0
    if os.geteuid() != 0:
        return fail("the tour needs root: it makes namespaces, cgroups, mounts and containers (try: sudo capsa tour)")
    _, failed = tour.run_steps(numbers, Narrator(sys.stdout), pause=args.pause)
    return 1 if failed else 0
