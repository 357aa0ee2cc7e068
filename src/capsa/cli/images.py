"""Image commands, with Docker's names and flags: pull, push, images
(image ls), rmi (image rm), tag, image inspect, save, load, import,
image prune, login, logout."""

import getpass
import json
import os
import sys

from capsa.cli import humanize
from capsa.errors import FailedPrecondition, InvalidArgument, NotFound


def register(commands) -> None:
    for name, adder in (("pull", _pull), ("push", _push), ("images", _ls), ("rmi", _rm), ("tag", _tag),
                        ("save", _save), ("load", _load), ("import", _import)):  # fmt: skip
        adder(commands.add_parser(name))
    from capsa.cli.main import Parser

    image = commands.add_parser("image", help="manage images").add_subparsers(
        dest="image_command", metavar="COMMAND", parser_class=Parser)  # fmt: skip
    for name, adder, aliases in (("pull", _pull, []), ("push", _push, []), ("ls", _ls, ["list"]),
                                 ("rm", _rm, ["remove"]), ("tag", _tag, []), ("inspect", _inspect, []),
                                 ("save", _save, []), ("load", _load, []), ("import", _import, []),
                                 ("prune", _prune, [])):  # fmt: skip
        adder(image.add_parser(name, aliases=aliases))
    _login(commands.add_parser("login", help="log in to a registry"))
    _logout(commands.add_parser("logout", help="log out from a registry"))


def open_store(args):
    from capsa.images.store import ImageStore

    return ImageStore(args.root)


def open_registry():
    from capsa.images.registry import Registry

    return Registry()


# -- pull / push


def _pull(p) -> None:
    p.description = "Download an image from a registry."
    p.add_argument("-q", "--quiet", action="store_true", help="print only the image's name")
    p.add_argument("--platform", help="os/arch[/variant] to pull (default: this host's)")
    p.add_argument("name", metavar="NAME[:TAG|@DIGEST]")
    p.set_defaults(handler=cmd_pull)


def cmd_pull(args) -> int:
    from capsa.images import hosts, manifest, progress, reference
    from capsa.images.pull import Pull

    ref = reference.parse(args.name)
    wanted = manifest.parse_platform(args.platform) if args.platform else manifest.host()
    store = open_store(args)
    shown = progress.for_output(args.quiet)
    try:
        Pull(store, open_registry(), ref, wanted, shown, downloads=hosts.load_config().max_concurrent_downloads,
             platform_given=bool(args.platform)).run()  # fmt: skip
    finally:
        shown.close()
    print(ref)
    return 0


def _push(p) -> None:
    p.description = "Upload an image to a registry."
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("name", metavar="NAME[:TAG]")
    p.set_defaults(handler=cmd_push)


def cmd_push(args) -> int:
    from capsa.images import progress, reference
    from capsa.images.push import push

    ref = reference.parse(args.name)
    if ref.digest:
        raise InvalidArgument(f"cannot push to {ref}: push a tag, not a digest")
    store = open_store(args)
    try:
        image = store.lookup(args.name)
    except NotFound:
        raise NotFound(f"an image does not exist locally with the tag: {ref.familiar_name}") from None
    shown = progress.for_output(args.quiet)
    try:
        push(store, open_registry(), ref, image, shown)
    finally:
        shown.close()
    return 0


# -- listing and inspecting


def _ls(p) -> None:
    p.description = "List images."
    p.add_argument("-a", "--all", action="store_true", help="show all images (there are no intermediate ones)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only image IDs")
    p.add_argument("--digests", action="store_true", help="show digests")
    p.add_argument("--no-trunc", action="store_true", help="do not truncate IDs")
    p.add_argument("--format", choices=["table", "json"], default="table", help="table or json (a line each)")
    p.add_argument("repository", nargs="?", metavar="REPOSITORY[:TAG]")
    p.set_defaults(handler=cmd_ls)


def image_rows(store, wanted: str | None) -> list[dict]:
    """One row per (image, repository, tag), as docker images lists them."""
    from capsa.images import reference

    rows = []
    for image in store.list():
        names = [reference.parse(name) for name in image.tags] or [None]
        digest_of = {reference.parse(d).name: d.partition("@")[2] for d in image.digests}
        for ref in names:
            if ref is None:
                repo = reference.parse(image.digests[0]).familiar_name if image.digests else "<none>"
                row = {"Repository": repo, "Tag": "<none>", "Digest": image.digests[0].partition("@")[2]
                       if image.digests else "<none>"}  # fmt: skip
            else:
                row = {"Repository": ref.familiar_name, "Tag": ref.tag,
                       "Digest": digest_of.get(ref.name, "<none>")}  # fmt: skip
            if wanted and not _matches(wanted, ref):
                continue
            created = humanize.parse_time(image.created)
            row.update(ID=image.id, CreatedAt=image.created, CreatedSince=humanize.ago(created),
                       Size=humanize.size(image.size), VirtualSize=humanize.size(image.size))  # fmt: skip
            rows.append(row)
    return rows


def _matches(wanted: str, ref) -> bool:
    from capsa.images import reference

    if ref is None:
        return False
    repo, _, tag = wanted.rpartition(":") if ":" in wanted.rsplit("/", 1)[-1] else (wanted, "", "")
    return reference.parse(repo).name == ref.name and (not tag or tag == ref.tag)


def cmd_ls(args) -> int:
    rows = image_rows(open_store(args), args.repository)
    short = (lambda i: i) if args.no_trunc else (lambda i: i.partition(":")[2][:12])
    if args.quiet:
        seen = []
        for row in rows:
            if short(row["ID"]) not in seen:
                seen.append(short(row["ID"]))
        print("\n".join(seen)) if seen else None
        return 0
    if args.format == "json":
        for row in rows:
            print(json.dumps(row))
        return 0
    header = ["REPOSITORY", "TAG"] + (["DIGEST"] if args.digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    table = [[r["Repository"], r["Tag"]] + ([r["Digest"]] if args.digests else [])
             + [short(r["ID"]), r["CreatedSince"], r["Size"]] for r in rows]  # fmt: skip
    print_table(header, table)
    return 0


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    for row in [header, *rows]:
        print("   ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def _inspect(p) -> None:
    p.description = "Show images' details as JSON."
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(handler=cmd_inspect)


def cmd_inspect(args) -> int:
    from capsa.cli.main import print_inspected

    store = open_store(args)
    return print_inspected(args.images, lambda name: describe_image(store, store.lookup(name)), "image")


def describe_image(store, image) -> dict:
    """An image as Docker's image inspect shapes it."""
    from capsa.images import manifest as manifests

    config = manifests.parse_config(store.content.read(image.id), f"config {image.id}")
    raw = config.raw
    return {
        "Id": image.id, "RepoTags": [_familiar(t) for t in image.tags],
        "RepoDigests": [_familiar(d) for d in image.digests], "Parent": "",
        "Comment": (raw.get("history") or [{}])[-1].get("comment", ""), "Created": image.created,
        "Author": raw.get("author", ""), "Config": raw.get("config") or {},
        "Architecture": config.platform.architecture, "Variant": config.platform.variant or None,
        "Os": config.platform.os, "Size": image.size, "VirtualSize": image.size,
        "RootFS": {"Type": "layers", "Layers": config.diff_ids},
        "Metadata": {"LastTagTime": ""},
        "Descriptor": {"mediaType": image.manifest_type, "digest": image.manifest,
                       "size": store.content.size(image.manifest)},
    }  # fmt: skip


def _familiar(name: str) -> str:
    from capsa.images import reference

    return reference.parse(name).familiar()


# -- names and removal


def _tag(p) -> None:
    p.description = "Give an image another name."
    p.add_argument("source", metavar="SOURCE_IMAGE[:TAG]")
    p.add_argument("target", metavar="TARGET_IMAGE[:TAG]")
    p.set_defaults(handler=cmd_tag)


def cmd_tag(args) -> int:
    from capsa.images import reference

    target = reference.parse(args.target)
    if target.digest:
        raise InvalidArgument(f"refusing to create a tag with a digest reference: {args.target}")
    store = open_store(args)
    store.tag(store.lookup(args.source), str(target))
    return 0


def _rm(p) -> None:
    p.description = "Remove images."
    p.add_argument("-f", "--force", action="store_true", help="remove the image even if several names point at it")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(handler=cmd_rm)


def cmd_rm(args) -> int:
    from capsa.images import gc

    store = open_store(args)
    failed = None
    with store.lock():
        for name in args.images:
            try:
                for line in remove_image(store, name, args.force):
                    print(line)
            except (NotFound, FailedPrecondition) as err:
                failed = err
                sys.stderr.write(f"capsa: {err}\n")
        gc.collect(store)
    return 1 if failed else 0


def remove_image(store, name: str, force: bool) -> list[str]:
    """Docker's rmi: a name untags; the last tag (or an ID) deletes."""
    from capsa.images import reference

    image = store.lookup(name)
    lines = []
    by_name = _is_name_of(image, name)
    if by_name and len(image.tags) > 1:
        full = str(reference.parse(name))
        store.untag(full)
        return [f"Untagged: {_familiar(full)}"]
    repos = {reference.parse(t).name for t in image.tags}
    if not by_name and len(repos) > 1 and not force:
        raise FailedPrecondition(f"conflict: unable to delete {image.short_id} (must be forced) - "
                                 "image is referenced in multiple repositories")  # fmt: skip
    users = containers_using(store, image.id)
    if users and not force:
        raise FailedPrecondition(f"conflict: unable to remove repository reference \"{name}\" (must force) - "
                                 f"container {users[0][:12]} is using its referenced image {image.short_id}")  # fmt: skip
    for tagged in image.tags + image.digests:
        store.untag(tagged)
        lines.append(f"Untagged: {_familiar(tagged)}")
    if not users:  # forced: the image stays, nameless, while containers use it
        store.delete(image.id)
        lines.append(f"Deleted: {image.id}")
    return lines


def containers_using(store, image_id: str) -> list[str]:
    return [row[0] for row in store.conn.execute("SELECT id FROM containers WHERE image = ?", (image_id,))]


def _is_name_of(image, text: str) -> bool:
    from capsa.images import reference

    try:
        return str(reference.parse(text)) in image.tags + image.digests
    except InvalidArgument:
        return False


def _prune(p) -> None:
    p.description = "Remove unused images: dangling ones, or with -a all."
    p.add_argument("-a", "--all", action="store_true", help="remove all images, not just dangling ones")
    p.add_argument("-f", "--force", action="store_true", help="do not ask for confirmation")
    p.set_defaults(handler=cmd_prune)


def cmd_prune(args) -> int:
    from capsa.images import gc

    from capsa.cli.main import confirm

    what = "all images without at least one container" if args.all else "all dangling images"
    if not args.force and not confirm(f"This will remove {what}."):
        return 0
    store = open_store(args)
    deleted = []
    with store.lock():
        for image in store.list():
            if (args.all or not image.tags) and not containers_using(store, image.id):
                deleted += [f"untagged: {_familiar(n)}" for n in image.tags + image.digests]
                store.delete(image.id)
                deleted.append(f"deleted: {image.id}")
        freed = gc.collect(store, partials=True)
    if deleted:
        print("Deleted Images:\n" + "\n".join(deleted) + "\n")
    print(f"Total reclaimed space: {humanize.size(freed.bytes)}")
    return 0


# -- archives


def _save(p) -> None:
    p.description = "Write images to a tar archive (docker-archive or oci-archive)."
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--format", choices=["docker-archive", "oci-archive"], default="docker-archive")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(handler=cmd_save)


def cmd_save(args) -> int:
    from capsa.images import archive

    store = open_store(args)  # save checks every name before it writes
    if args.output is None:
        if sys.stdout.isatty():
            raise InvalidArgument("cowardly refusing to save to a terminal; use -o or redirect stdout")
        archive.save(store, args.images, sys.stdout.buffer, args.format)
        return 0
    tmp = f"{args.output}.capsa-tmp"
    try:
        with open(tmp, "wb") as out:
            archive.save(store, args.images, out, args.format)
        os.replace(tmp, args.output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return 0


def _load(p) -> None:
    p.description = "Load images from a docker-archive or oci-archive tarball."
    p.add_argument("-i", "--input", help="read from this file instead of stdin")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    p.set_defaults(handler=cmd_load)


def cmd_load(args) -> int:
    from capsa.images import archive

    store = open_store(args)
    if args.input is None:
        if sys.stdin.isatty():
            raise InvalidArgument("requested load from stdin, but stdin is empty (a terminal); use -i")
        loaded = archive.load(store, sys.stdin.buffer)
    else:
        try:
            source = open(args.input, "rb")
        except FileNotFoundError:
            raise NotFound(f"failed to load images: no such file {args.input}") from None
        with source:
            loaded = archive.load(store, source)
    if not args.quiet:
        for name in loaded:
            print(f"Loaded image ID: {name}" if name.startswith("sha256:") else f"Loaded image: {_familiar(name)}")
    return 0


def _import(p) -> None:
    p.description = "Create an image from a rootfs directory or tarball (- for stdin)."
    p.add_argument("-c", "--change", action="append", default=[], help="apply a Dockerfile instruction")
    p.add_argument("-m", "--message", default="", help="commit message")
    p.add_argument("--platform", help="os/arch[/variant] of the image (default: this host's)")
    p.add_argument("source", metavar="file|dir|-")
    p.add_argument("repository", nargs="?", metavar="REPOSITORY[:TAG]")
    p.set_defaults(handler=cmd_import)


def cmd_import(args) -> int:
    from capsa.images import manifest, reference
    from capsa.images.importer import import_rootfs

    ref = reference.parse(args.repository) if args.repository else None
    if ref is not None and ref.digest:
        raise InvalidArgument(f"cannot import as a digest reference: {args.repository}")
    wanted = manifest.parse_platform(args.platform) if args.platform else manifest.host()
    if args.source != "-" and not os.path.exists(args.source):
        raise NotFound(f"failed to import: no such file or directory {args.source}")
    image = import_rootfs(open_store(args), args.source, ref, wanted, args.message, args.change)
    print(image.id)
    return 0


# -- credentials


def _login(p) -> None:
    p.description = "Log in to a registry (default docker.io)."
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("server", nargs="?", default="docker.io")
    p.set_defaults(handler=cmd_login)


def cmd_login(args) -> int:
    from capsa.images import credentials

    host = registry_host(args.server)
    credentials.load(credentials.path())  # a broken file fails before the registry is asked
    user = args.username or (input("Username: ") if sys.stdin.isatty() else None)
    if args.password_stdin:
        if args.password:
            raise InvalidArgument("--password and --password-stdin are mutually exclusive")
        password = sys.stdin.read().rstrip("\n")
    else:
        password = args.password or (getpass.getpass("Password: ") if sys.stdin.isatty() else None)
    if not user or not password:
        raise InvalidArgument("login needs a username and a password (-u, -p or --password-stdin)")
    if args.password and not args.password_stdin:
        sys.stderr.write("WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n")
    open_registry().check_login(host, user, password)
    credentials.store(host, user, password)
    print("Login Succeeded")
    return 0


def _logout(p) -> None:
    p.description = "Forget the credentials of a registry (default docker.io)."
    p.add_argument("server", nargs="?", default="docker.io")
    p.set_defaults(handler=cmd_logout)


def cmd_logout(args) -> int:
    from capsa.images import credentials

    host = registry_host(args.server)
    if credentials.erase(host):
        print(f"Removing login credentials for {host}")
    else:
        print(f"Not logged in to {host}")
    return 0


def registry_host(server: str) -> str:
    """The host[:port] of a server argument (Docker accepts URLs too)."""
    host = server.removeprefix("https://").removeprefix("http://").split("/", 1)[0]
    if not host:
        raise InvalidArgument(f"invalid registry {server!r}")
    return "docker.io" if host in ("index.docker.io", "registry-1.docker.io") else host
