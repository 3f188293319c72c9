"""``python -m nimflow.testing``: run the fake OpenAI-compatible server in the foreground."""

from __future__ import annotations

from collections.abc import Sequence

from ._options import build_parser, from_strings
from ._server import serve


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = from_strings(vars(args))
    except ValueError as error:
        parser.error(str(error))
    try:
        serve(options)
    except OSError as error:  # the port is taken
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    main()
