"""The command line: parse arguments, call one workflow, print. Imports nothing heavy at start-up."""

from __future__ import annotations

import argparse
import os
import sys

from imgcls.cli import commands
from imgcls.cli.train import add_train
from imgcls.errors import ImgclsError, Interrupted


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line naming the problem and where to read more."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The imgcls argument parser with every subcommand."""
    from imgcls import __version__

    parser = _Parser(prog="imgcls", description="Train, evaluate and use image classifiers (CNNs and ViTs).")
    parser.add_argument("--version", action="version", version=f"imgcls {__version__}")
    verbs = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    add_train(verbs)
    commands.add_eval(verbs)
    commands.add_calibrate(verbs)
    commands.add_predict(verbs)
    commands.add_export(verbs)
    commands.add_explain(verbs)
    commands.add_serve(verbs)
    commands.add_models(verbs)
    commands.add_summary(verbs)
    commands.add_recipes(verbs)
    commands.add_report(verbs)
    commands.add_compare(verbs)
    commands.add_data(verbs, _Parser)
    return parser


def _one_line(error: ImgclsError) -> str:
    """The message; for an error re-raised from a DataLoader worker, the original message without the trace."""
    text = str(error).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split("ImgclsError: ", 1)[-1]
    return text


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `imgcls` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.handler(args)
    except ImgclsError as error:
        rank = os.environ.get("RANK", "0")  # set by torchrun / accelerate launch: say which process failed
        where = "" if rank == "0" else f" (process {rank})"
        print(f"imgcls {args.command}: error{where}: {_one_line(error)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader closed the pipe (`imgcls models | head`): stop quietly, as Python's documentation advises
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Interrupted as interruption:  # training saved where it stopped
        print(f"imgcls {args.command}: {interruption}", file=sys.stderr)
        return interruption.exit_code
    except KeyboardInterrupt:
        hint = " (continue with 'imgcls train --resume RUN')" if args.command == "train" else ""
        print(f"imgcls {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
