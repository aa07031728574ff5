"""Get one input file: download it, take it out of a downloaded archive, or say what a person must do.

  vpr fetch --url URL --out PATH [--sha256 HEX]          download (atomic, length and checksum checked,
                                                         retried only on what can heal:
                                                         connection errors, 5xx, short bodies)
  vpr fetch --archive FILE --member NAME --out PATH      copy the archive member with that file name
  vpr fetch --manual --out PATH --what TEXT [--page URL] fail with one line: what to put at PATH, and
                                                         the page to get it from (exit 2)

On any failure nothing is left at PATH and the error names the URL or archive and PATH (exit 2). The
workflow runs this command for every input file it does not have yet.
"""

from __future__ import annotations

import argparse

from vpr.commands.options import positive_float, positive_int


def configure(parser: argparse.ArgumentParser) -> None:
    # --out is not declared as an output (vpr.commands.options): with --manual it may name a folder of images
    # that a person must create, and nothing may be created on the way to the instruction.
    parser.add_argument("--out", required=True, help="the file to create")
    parser.add_argument("--url", help="download this URL (http, https or file)")
    parser.add_argument("--sha256", help="with --url: expected SHA-256 of the file (64 hex digits)")
    parser.add_argument("--attempts", type=positive_int, default=4,
                        help="with --url: tries in all on connection errors, timeouts, server errors (5xx) "
                             "and short bodies (a full disk, a 4xx, a wrong checksum: no retry)")
    parser.add_argument("--backoff", type=positive_float, default=2.0,
                        help="with --url: seconds before the second try, doubled before each further one")
    parser.add_argument("--timeout", type=positive_float, default=60.0,
                        help="with --url: seconds without data before a try is abandoned")
    parser.add_argument("--archive", help="take the file out of this tar/zip archive")
    parser.add_argument("--member", help="with --archive: the member's file name (found in any folder; "
                                         "default: the file name of --out)")
    parser.add_argument("--manual", action="store_true",
                        help="the file needs a person: fail with an instruction naming --what and --page")
    parser.add_argument("--what", help="with --manual: what belongs at --out")
    parser.add_argument("--page", help="with --manual: the page to get it from")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vpr.errors import VprError
    from vpr.fetch import download, extract_member, manual_instruction

    modes = [m for m, on in (("--url", args.url), ("--archive", args.archive), ("--manual", args.manual))
             if on]
    if len(modes) != 1:
        raise VprError("give exactly one of --url, --archive and --manual")
    if args.manual:
        raise VprError(manual_instruction(args.out, args.what or "the file", args.page))
    if args.sha256 and not args.url:
        raise VprError("--sha256 goes with --url")
    if args.attempts < 1 or args.backoff < 0 or not args.timeout > 0:
        raise VprError("--attempts must be >= 1, --backoff >= 0 and --timeout > 0")
    if args.url:
        size = download(args.url, args.out, args.sha256, attempts=args.attempts, backoff=args.backoff,
                        timeout=args.timeout)
        print(f"{args.out}: {size} bytes from {args.url}")
    else:
        member = args.member or Path(args.out).name
        size = extract_member(args.archive, member, args.out)
        print(f"{args.out}: {size} bytes, {member} from {args.archive}")
    return 0
