"""The `dualrec` subcommands: each module here adds its own with `register(subparsers)`."""

from dualrec.commands import data, evaluate, recommend, train

COMMAND_MODULES = [data, train, recommend, evaluate]
