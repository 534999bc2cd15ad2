"""``notegrade``: one command, many subcommands, each a thin layer over a ``main(*, ...)``.

Each subcommand lives in its own module, which defines::

    def add_arguments(parser: argparse.ArgumentParser) -> None  # options and --help examples
    def run(args: argparse.Namespace) -> int                    # calls the module's main(*, ...)

Modules are imported only when their subcommand runs, so ``notegrade --help`` is instant
and the grading runtime never imports the instructor tools.

Exit status: 0 ok, 1 failure (a :class:`NotegradeError` or a failed check), 2 bad usage.
"""
from __future__ import annotations

import argparse
import difflib
import importlib
import os
import sys
import traceback

from autograder import __version__
from autograder.errors import NotegradeError
from autograder.instructor.grading.local import hide_arguments, received_arguments

# (subcommand words) -> (module, one-line summary).  The order is the data flow.
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("data", "render"): ("reference.render", "render an offline NSynth-format dataset with FluidSynth"),
    ("data", "features"): ("reference.make_features", "NSynth split directory -> feature cache file"),
    ("heldout",): ("reference.heldout", "NSynth split directory -> held-out file for the autograder"),
    ("train",): ("autograder.instructor.slurm.training", "train the reference NoteCNN on feature files (here or on Slurm)"),
    ("evaluate",): ("reference.evaluation", "checkpoint + feature file -> metrics.json and confusion matrix"),
    ("assign",): ("autograder.instructor.assign.command", "generate the student starter code from the reference"),
    ("selfcheck",): ("autograder.selfcheck.command", "run the visible checks on a student directory"),
    ("build",): ("autograder.instructor.build.command", "build the Gradescope autograder zip"),
    ("calibrate",): ("autograder.instructor.calibrate.command", "what each common student mistake costs under an autograder"),
    ("grade",): ("autograder.instructor.grading.command", "grade one submission (or a folder of them) locally or in Docker"),
    ("regrade",): ("autograder.instructor.regrade.command", "regrade a Gradescope 'Export Submissions' archive"),
    ("integrity",): ("autograder.instructor.class_integrity.command",
                     "compare a class's submissions: shared checkpoints, copied code, suspicious agreement"),
    ("report",): ("autograder.instructor.class_report.command", "grades.csv -> single-file HTML class report"),
    ("demo",): ("autograder.instructor.demo.command", "run the whole toolkit end to end on a small rendered dataset"),
}


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the examples' line breaks and show defaults (but not "None" or False for flags)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or "(default" in (action.help or "") or "default:" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def _overview() -> str:
    width = max(len(" ".join(words)) for words in COMMANDS)
    lines = [f"  {' '.join(words):<{width}}  {summary}" for words, (_, summary) in COMMANDS.items()]
    return "commands:\n" + "\n".join(lines) + "\n\nRun 'notegrade COMMAND --help' for a command's options and examples."


def _match(argv: list[str]) -> tuple[tuple[str, ...], list[str]] | None:
    for words in sorted(COMMANDS, key=len, reverse=True):
        if tuple(argv[: len(words)]) == words:
            return words, argv[len(words) :]
    return None


def build_parser(words: tuple[str, ...]) -> argparse.ArgumentParser:
    """The parser of one subcommand, with the module's own options."""
    module_name, summary = COMMANDS[words]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(
        prog="notegrade " + " ".join(words),
        # The module docstring's first paragraph says it best; the registry's summary is the fallback.
        # (its reStructuredText literals lose their double backticks: --help is plain text)
        description=(module.__doc__ or "").strip().split("\n\n")[0].replace("``", "")
        or summary[0].upper() + summary[1:] + ".",
        epilog=getattr(module, "EXAMPLES", None),
        formatter_class=_Formatter,
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of unexpected errors")
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)
    return parser


def _did_you_mean(argv: list[str], group: "list[tuple[str, ...]]") -> str:
    """A hint for an unknown command: the group's subcommands, or the closest command names.

    >>> _did_you_mean(["calibrat"], []), _did_you_mean(["data", "x"], [("data", "render"), ("data", "features")])
    (" (did you mean 'calibrate'?)", ' (did you mean: data render, data features?)')
    >>> _did_you_mean(["zzz"], [])
    ''
    """
    if group:
        return " (did you mean: " + ", ".join(" ".join(w) for w in group) + "?)"
    names = sorted({w[0] for w in COMMANDS})
    close = difflib.get_close_matches(argv[0], names, n=2, cutoff=0.6)
    return (" (did you mean " + " or ".join(repr(c) for c in close) + "?)") if close else ""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``notegrade`` console script."""
    if argv is None:
        # As root, grading commands re-execute with their arguments in a root-only channel, so the
        # running command line (readable by student code via /proc) names no instructor's path.
        received = received_arguments()
        if received is not None:
            argv = sys.argv[1:] = received  # the command as typed, for hints that repeat it (e.g. --resume JOBID)
        else:
            argv = sys.argv[1:]
            if argv[:1] in (["grade"], ["regrade"], ["integrity"], ["demo"]):
                hide_arguments(argv)  # returns only when there is nothing to hide (not root)
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(f"usage: notegrade COMMAND [options]\n\nnotegrade {__version__}: the NSynth CNN assignment toolkit.\n")
        print(_overview())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"notegrade {__version__}")
        return 0
    matched = _match(argv)
    group = [w for w in COMMANDS if w[0] == argv[0] and len(w) > 1]
    if matched is None and group and (len(argv) == 1 or argv[1] in ("-h", "--help", "help")):
        # `notegrade data --help`: the group's subcommands (bare `notegrade data`: the same, as bad usage)
        width = max(len(" ".join(words)) for words in group)
        print(f"usage: notegrade {argv[0]} {{{','.join(w[1] for w in group)}}} [options]\n\n{argv[0]} commands:")
        for words in group:
            print(f"  {' '.join(words):<{width}}  {COMMANDS[words][1]}")
        print(f"\nRun 'notegrade {argv[0]} COMMAND --help' for a command's options and examples.")
        return 0 if len(argv) > 1 else 2
    if matched is None:
        print(f"notegrade: error: unknown command {' '.join(argv[:2])!r}{_did_you_mean(argv, group)}\n",
              file=sys.stderr)
        print(_overview(), file=sys.stderr)
        return 2
    words, rest = matched
    parser = build_parser(words)
    args = parser.parse_args(rest)  # exits with 2 on bad usage
    try:
        return int(args._run(args) or 0)
    except NotegradeError as err:
        print(f"notegrade {' '.join(words)}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"notegrade {' '.join(words)}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug in notegrade, not the user's fault
        if args.debug or os.environ.get("NOTEGRADE_DEBUG"):
            traceback.print_exc()
        print(
            f"notegrade {' '.join(words)}: internal error: {type(err).__name__}: {err}\n"
            "This is a bug in notegrade; rerun with --debug for the traceback and report it.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
