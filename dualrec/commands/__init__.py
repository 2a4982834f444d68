"""The `dualrec` subcommands: each module here adds its own with `register(subparsers)`."""

from dualrec.commands import data, evaluate, finetune, llm, recommend, train

COMMAND_MODULES = [data, llm, train, recommend, evaluate, finetune]
