"""The `moeplace` command: `moeplace lm|rl|place ...`.

Each area registers its subcommands from its own module (cli/lm.py, cli/rl.py, cli/place.py);
heavy imports happen inside the command functions so `--help` stays fast. User errors
(MoeplaceError) become one line on stderr and their exit code (2, or 3 when training diverged).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from moeplace.errors import MoeplaceError

# (command, module, help): each module defines `register(subparsers)`.
_AREAS = [
    ("lm", "moeplace.cli.lm", "MoE language models: train, eval, sample, compare"),
    ("rl", "moeplace.cli.rl", "policy-gradient RL: grid robot, Gymnasium environments"),
    ("place", "moeplace.cli.place", "placement with RL: chip macros, device placement"),
]


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line and exit code 2 (argparse's own convention)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every area's subcommands registered."""
    parser = _Parser(prog="moeplace", description=__doc__.splitlines()[0])
    from moeplace import __version__

    parser.add_argument("--version", action="version", version=f"moeplace {__version__}")
    sub = parser.add_subparsers(dest="area", metavar="{lm,rl,place}", parser_class=_Parser)
    for name, module, help_ in _AREAS:
        area = sub.add_parser(name, help=help_, description=help_)
        area_sub = area.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
        register_modules(area_sub, [module])
    return parser


def register_modules(subparsers: argparse._SubParsersAction, modules: list[str]) -> None:
    """Call `register(subparsers)` of each module that exists (a missing one is skipped)."""
    for module in modules:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.register(subparsers)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run the chosen command, map user errors to their exit code (see README).

    Returns the exit code in every case, bad arguments (2) and --help (0) included.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        func = getattr(args, "func", None)
        if func is None:
            parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
            return 2
    except SystemExit as e:  # argparse: --help, --version (0) or a bad argument (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return int(func(args) or 0)
    except MoeplaceError as e:
        print(f"moeplace: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("moeplace: interrupted", file=sys.stderr)
        return 130
