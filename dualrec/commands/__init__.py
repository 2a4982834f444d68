"""The `dualrec` subcommands: each module here adds its own with `register(subparsers)`."""

from dualrec.commands import data

COMMAND_MODULES = [data]
