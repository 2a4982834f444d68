"""Every option of every command, given a value out of its range and a value of the wrong type: one clear message that
names the option, no traceback, and before any model or the data loads. The data folder given is missing unless the
check needs the data, so a check that came after loading would report the missing folder instead of its message."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import pytest

from dualrec.cli import build_parser, main

RANGE, TYPE = "out of range", "wrong type"
MISSING, FIXTURE, NONE = "missing", "fixture", "none"  # the --data-dir given: a missing folder, the generated one, none
NO_LLM = ["--model", "gpt-17"]  # an unknown model: `generate` stops before any LLM loads
PERSON = ["--user", "1"]  # for the commands that need --user or --history
NEEDS_A_PERSON = ("data show", "prompt", "generate", "recommend")
DATA_COMMANDS = ("data stats", "data show", "prompt", "match", "generate", "train lstm", "recommend", "evaluate", "finetune")


def case(command: str, kind: str, argv: list[str], message: str, code: int = 2, data: str = MISSING, **how: str):
    """`dualrec COMMAND ARGV` must exit with `code` and print `message` ({fixture}: the generated data folder). The
    option tried is ARGV's first (or `option=`); `xfail=` a reason: a known failure."""
    option = how.get("option") or argv[0].split("=")[0]
    marks = [pytest.mark.xfail(strict=True, reason=how["xfail"])] if "xfail" in how else []
    return pytest.param(command, option, kind, argv, message, code, data, id=f"{command} {' '.join(argv)}", marks=marks)


def not_int(command: str, flag: str, value: str, **how: str):
    return case(command, TYPE, [flag, value], f"argument {flag}: invalid int value: '{value}'", **how)


def below_one(command: str, flag: str, value: str = "0", **how: str):
    return case(command, RANGE, [flag, value], f"{flag} must be at least 1, not {value}.", **how)


def bad_seed(command: str, flag: str, **how: str):
    return case(command, RANGE, [flag, "-1"], f"{flag} must be from 0 to 4294967295, not -1.", **how)


def command_actions() -> dict[str, list[argparse.Action]]:
    """The options (and positional arguments) of every command, by command name ("data stats", "finetune", ...)."""
    found = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        subcommands = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
        for action in subcommands:
            for sub_name, sub in action.choices.items():
                walk(sub, f"{name} {sub_name}".strip())
        if name and not subcommands:
            found[name] = [action for action in parser._actions if not isinstance(action, argparse._HelpAction)]

    walk(build_parser(), "")
    return found


def flag_and_choice_cases() -> list:
    """Read from the parser, for every command: each on/off flag given a value, each option with choices given another."""
    cases = []
    for command, actions in command_actions().items():
        for action in actions:
            shown = "/".join(action.option_strings)
            if action.nargs == 0:
                message = f"argument {shown}: ignored explicit argument 'yes'"
                cases += [case(command, TYPE, [f"{flag}=yes"], message) for flag in action.option_strings]
            elif action.choices:
                flag = action.option_strings[0]
                cases.append(case(command, RANGE, [flag, "other"], f"argument {shown}: invalid choice: 'other'"))
    return cases


def data_option_cases(command: str) -> list:
    """The data options, the same for every command that reads the data."""
    return [
        case(command, RANGE, [], "ratings.dat, movies.dat, users.dat not found in", option="--data-dir"),
        case(command, TYPE, ["--data-dir", "{fixture}/ratings.dat"], "not found in {fixture}/ratings.dat", data=NONE),
        case(command, RANGE, ["--split-seed", "-5"], "Invalid data options: --split-seed must be from 0 to 4294967295, not -5."),
        not_int(command, "--split-seed", "1.5"),
        case(command, RANGE, ["--windows-per-user", "0"], "Invalid data options: --windows-per-user must be at least 1, not 0."),
        not_int(command, "--windows-per-user", "x"),
    ]


def person_cases(command: str) -> list:
    """--user, --history and --history-file, for the commands that take one (the data is needed to find a user or a title)."""
    return [
        case(command, RANGE, ["--user", "-1"], "User -1 is not in users.dat (valid ids run from 1 to 300).", data=FIXTURE),
        not_int(command, "--user", "me"),
        case(command, RANGE, ["--history", "A Movie That Never Was (2042)"], "No MovieLens movie matches", data=FIXTURE),
        case(command, TYPE, ["--history", " ; "], "No titles given", data=FIXTURE),
        case(
            command,
            RANGE,
            ["--history-file", "{fixture}/no-history.csv"],
            "Cannot read the history file {fixture}/no-history.csv: No such file or directory.",
            data=FIXTURE,
        ),
        case(command, TYPE, ["--history-file", "{fixture}/users.dat"], "No row of users.dat names a MovieLens", data=FIXTURE),
    ]


def out_cases(command: str) -> list:
    """An --out folder that is a file, or inside one: refused before any work that would be lost at the end."""
    return [
        case(command, kind, ["--out", out], f"--out {out} cannot be a folder: {{fixture}}/ratings.dat is a file.")
        for kind, out in ((TYPE, "{fixture}/ratings.dat"), (RANGE, "{fixture}/ratings.dat/model"))
    ]


def no_lstm_cases(command: str, flag: str) -> list:
    """A trained-LSTM folder that is not there, or a file: the message says where it looked (and how to train one)."""
    return [
        case(command, kind, [flag, folder], f"No trained LSTM in {folder}. Train one with: dualrec train lstm", data=FIXTURE)
        for kind, folder in ((RANGE, "{fixture}/no-model"), (TYPE, "{fixture}/ratings.dat"))
    ]


def hybrid_cases(command: str) -> list:
    """The hybrid's options: its LLM (unknown, or an API without log-probabilities) and its candidate count."""
    return [
        case(command, RANGE, ["--llm", "gpt-17"], "Invalid hybrid options: --llm: unknown model preset 'gpt-17'"),
        case(command, TYPE, ["--llm", "deepseek-v3"], "the hybrid reads the log-probabilities of given answers, so it needs"),
        case(command, RANGE, ["--candidates", "1001"], "Invalid hybrid options: --candidates must be from 1 to 1000, not 1001."),
        not_int(command, "--candidates", "twenty"),
        case(
            command,
            RANGE,
            ["--candidates", "27", "--scorer", "auto"],
            "--candidates must be at most 26 with --scorer auto (labels lists (A) to (Z)), not 27",
        ),
    ]


FINETUNE_COUNTS = ("--r", "--alpha", "--steps", "--batch-size", "--grad-accum", "--max-length", "--examples-per-user")
FINETUNE_COUNTS += ("--val-examples", "--eval-steps", "--save-steps", "--lora-layers")

CASES = [
    *flag_and_choice_cases(),
    *(c for command in DATA_COMMANDS for c in data_option_cases(command)),
    # data stats / show
    case("data show", RANGE, ["--user", "0"], "User 0 is not in users.dat (valid ids run from 1 to 300).", data=FIXTURE),
    not_int("data show", "--user", "Alice"),
    *(c for command in ("recommend", "prompt", "generate") for c in person_cases(command)),
    # train lstm
    *out_cases("train lstm"),
    case("train lstm", RANGE, ["--epochs", "0"], "Invalid LSTM options: --epochs must be at least 1, not 0."),
    case("train lstm", RANGE, ["--epochs", "-3"], "Invalid LSTM options: --epochs must be at least 1, not -3."),
    not_int("train lstm", "--epochs", "2.5"),
    bad_seed("train lstm", "--seed"),
    not_int("train lstm", "--seed", "x"),
    case("train lstm", RANGE, ["--max-minutes", "0"], "argument --max-minutes: the budget must be above 0 minutes, not 0"),
    case("train lstm", TYPE, ["--max-minutes", "inf"], "argument --max-minutes: 'inf' is not a number of minutes"),
    # recommend
    case("recommend", RANGE, ["--k", "0"], "Invalid option: --k must be at least 1, not 0."),
    not_int("recommend", "--k", "ten"),
    *no_lstm_cases("recommend", "--model"),
    *(c for command in ("recommend", "evaluate") for c in hybrid_cases(command)),
    case("recommend", RANGE, ["--weight", "-1"], "Invalid hybrid options: --weight must be at least 0, not -1.0."),
    case("recommend", TYPE, ["--weight", "heavy"], "argument --weight: invalid float value: 'heavy'"),
    case("recommend", RANGE, ["--scorer", "auto"], "--scorer auto chooses the scorer on the validation cases, which"),
    # finetune
    case("finetune", RANGE, ["--base", "gpt-17"], "unknown model preset 'gpt-17'"),
    case("finetune", TYPE, ["--base", "deepseek-v3"], "deepseek-v3 is an API model: a LoRA adapter needs a local base model"),
    *out_cases("finetune"),
    case("finetune", RANGE, ["--dump-examples", "0"], "Invalid option: --dump-examples must be at least 1, not 0."),
    not_int("finetune", "--dump-examples", "all"),
    *no_lstm_cases("finetune", "--lstm-dir"),
    *(below_one("finetune", flag) for flag in FINETUNE_COUNTS),
    *(not_int("finetune", flag, "4.0") for flag in FINETUNE_COUNTS),
    case("finetune", RANGE, ["--dropout", "1"], "Invalid fine-tuning options: --dropout must be from 0 to below 1, not 1.0."),
    case("finetune", TYPE, ["--dropout", "nan"], "--dropout must be a finite number from 0 to below 1, not nan."),
    case("finetune", RANGE, ["--target-modules", ","], "--target-modules must be one or more values, each a name, not ()."),
    case("finetune", TYPE, ["--target-modules", "q_proj;v_proj"], "--target-modules must be layer names (letters, digits"),
    case("finetune", RANGE, ["--lr", "0"], "--lr must be above 0, not 0.0."),
    case("finetune", TYPE, ["--lr", "inf"], "--lr must be a finite number above 0, not inf."),
    case("finetune", RANGE, ["--epochs", "-1"], "--epochs must be above 0, not -1.0."),
    case("finetune", TYPE, ["--epochs", "one"], "argument --epochs: invalid float value: 'one'"),
    bad_seed("finetune", "--seed"),
    not_int("finetune", "--seed", "x"),
    case("finetune", RANGE, ["--candidates", "1001"], "fine-tuning options: --candidates must be from 1 to 1000, not 1001."),
    not_int("finetune", "--candidates", "twenty"),
    case("finetune", RANGE, ["--task", "rerank", "--scorer", "labels", "--candidates", "27"], "at most 26 with --scorer labels"),
    case("finetune", RANGE, ["--task", "rerank", "--profile", "cpu"], "--profile cpu is not a profile of --task rerank"),
    # prompt (commands/llm.py)
    below_one("prompt", "--k"),
    not_int("prompt", "--k", "three"),
    case("prompt", RANGE, ["--lstm-dir", "{fixture}/no-model"], "note: No trained LSTM in {fixture}/no-model", 0, FIXTURE),
    case("prompt", TYPE, ["--lstm-dir", "{fixture}/ratings.dat"], "note: No trained LSTM in {fixture}/ratings.dat", 0, FIXTURE),
    # match (commands/llm.py; the answer comes on stdin)
    case("match", RANGE, ["--prompt-file", "{fixture}/no-prompt.txt"], "{fixture}/no-prompt.txt"),
    case("match", TYPE, ["--prompt-file", "{fixture}"], "--prompt-file {fixture}"),
    # generate (commands/llm.py)
    below_one("generate", "--k"),
    not_int("generate", "--k", "x"),
    case("generate", RANGE, ["--lstm-dir", "{fixture}/no", *NO_LLM], "note: No trained LSTM in {fixture}/no,", data=FIXTURE),
    case("generate", TYPE, ["--lstm-dir", "{fixture}/ratings.dat", *NO_LLM], "note: No trained LSTM in", data=FIXTURE),
    case("generate", RANGE, ["--model", "gpt-17"], "unknown model preset 'gpt-17'", data=FIXTURE),
    case("generate", TYPE, ["--model", "{fixture}/ratings.dat"], "could not load {fixture}/ratings.dat", data=FIXTURE),
    below_one("generate", "--max-new-tokens"),
    not_int("generate", "--max-new-tokens", "many"),
    bad_seed("generate", "--seed"),
    not_int("generate", "--seed", "x"),
    # evaluate (commands/evaluate.py)
    case("evaluate", RANGE, ["--systems", "nope"], "Unknown system nope", data=FIXTURE),
    case("evaluate", TYPE, ["--systems", ","], "Unknown system (none given)", data=FIXTURE),
    case("evaluate", RANGE, ["--protocol", "bogus"], "Unknown protocol bogus", data=FIXTURE),
    case("evaluate", TYPE, ["--protocol", " "], "Unknown protocol (none given)", data=FIXTURE),
    case("evaluate", TYPE, ["--out", "{fixture}"], "--out {fixture}"),
    case("evaluate", RANGE, ["--out", "{fixture}/ratings.dat/r.json"], "--out {fixture}/ratings.dat/r.json"),
    *no_lstm_cases("evaluate", "--lstm-dir"),
    case(
        "evaluate", RANGE, ["--baseline-minutes", "-5"], "argument --baseline-minutes: the budget must be above 0 minutes, not -5"
    ),
    case("evaluate", TYPE, ["--baseline-minutes", "nan"], "argument --baseline-minutes: 'nan' is not a number of minutes"),
    below_one("evaluate", "--bootstrap"),
    not_int("evaluate", "--bootstrap", "1e3"),
    bad_seed("evaluate", "--seed"),
    not_int("evaluate", "--seed", "x"),
    case("evaluate", RANGE, ["--model", "gpt-17", "--protocol", "freeform"], "unknown model preset 'gpt-17'"),
    case("evaluate", TYPE, ["--model", ",", "--protocol", "freeform"], "--model"),
    case("evaluate", RANGE, ["--model", "smollm2-135m+adapters/none", "--protocol", "freeform"], "no LoRA adapter in"),
    below_one("evaluate", "--limit"),
    not_int("evaluate", "--limit", "all"),
    bad_seed("evaluate", "--limit-seed"),
    not_int("evaluate", "--limit-seed", "x"),
    below_one("evaluate", "--k"),
    not_int("evaluate", "--k", "x"),
    below_one("evaluate", "--max-new-tokens"),
    not_int("evaluate", "--max-new-tokens", "x"),
    bad_seed("evaluate", "--sample-seed"),
    not_int("evaluate", "--sample-seed", "x"),
    below_one("evaluate", "--concurrency"),
    not_int("evaluate", "--concurrency", "many"),
    case("evaluate", RANGE, ["--hybrid-weights", "0.5,1"], "Invalid hybrid options: --hybrid-weights must include 0 (the LSTM"),
    case("evaluate", TYPE, ["--hybrid-weights", "0,w"], "argument --hybrid-weights: '0,w' is not a comma-separated list"),
    below_one("evaluate", "--hybrid-limit"),
    not_int("evaluate", "--hybrid-limit", "half"),
    below_one("evaluate", "--hybrid-valid-limit"),
    not_int("evaluate", "--hybrid-valid-limit", "half"),
    bad_seed("evaluate", "--hybrid-limit-seed"),
    not_int("evaluate", "--hybrid-limit-seed", "x"),
    case("evaluate", RANGE, ["--text-encoder", "{fixture}/no-encoder"], "Text encoder '{fixture}/no-encoder' is neither"),
    case("evaluate", TYPE, ["--text-encoder", "{fixture}"], "{fixture} holds no model: a text encoder folder needs"),
    case("evaluate", RANGE, ["--unisrec-checkpoint", "{fixture}/no.pth"], "--unisrec-checkpoint {fixture}/no.pth is not a file"),
    case("evaluate", TYPE, ["--unisrec-checkpoint", "{fixture}"], "Invalid UniSRec options: --unisrec-checkpoint {fixture} is"),
    case("evaluate", RANGE, ["--llm", "gpt-17", "--systems", "nir"], "Invalid NIR options: --llm: unknown model preset 'gpt-17'"),
    case("evaluate", TYPE, ["--llm", "deepseek-v3", "--systems", "nir"], "not found in"),  # NIR takes an API model: data next
    case(
        "evaluate",
        RANGE,
        ["--candidate-seeds", "0,7", "--protocol", "poster"],
        "Invalid poster protocol options: --candidate-seeds must be PO4ISR's, one or more of 0, 10, 42, 625, 2023, not (0, 7).",
    ),
    case(
        "evaluate",
        RANGE,
        ["--negative-seeds", "0,-1"],
        "Invalid data options: --negative-seeds must be one or more values, each a whole number from 0 to 4294967295",
    ),
    case("evaluate", RANGE, ["--negative-seeds", "3,3"], "Invalid data options: --negative-seeds must not repeat a seed"),
    case("evaluate", TYPE, ["--negative-seeds", "0,x"], "argument --negative-seeds: '0,x' is not a comma-separated list"),
    case(
        "evaluate", TYPE, ["--candidate-seeds", "0,x"], "argument --candidate-seeds: '0,x' is not a comma-separated list of whole"
    ),
    case(
        "evaluate",
        RANGE,
        ["--protocol", "poster,full"],
        "--protocol poster is its own data (PO4ISR's sessions)",
        option="--protocol",
    ),
    # results (commands/evaluate.py)
    case("results", RANGE, ["{fixture}/no-results.json"], "Cannot read results file {fixture}/no-results.json", option="files"),
    case("results", TYPE, ["{fixture}/ratings.dat"], "Cannot read results file {fixture}/ratings.dat", option="files"),
    case("results", RANGE, ["--protocol", "bogus", "{fixture}/no-results.json"], "Unknown protocol bogus"),
    case("results", TYPE, ["--protocol", "", "{fixture}/no-results.json"], "Unknown protocol (none given)"),
]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """The exit code and stderr of `dualrec ARGV` run in this process (argparse's errors exit; ours return 2)."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("command", "option", "kind", "argv", "message", "code", "data"), CASES)
def test_a_bad_option_is_one_clear_message(
    command, option, kind, argv, message, code, data, ml_dir, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(sys, "stdin", io.StringIO("1. Toy Story (1995)\n"))  # `dualrec match` reads the answer here
    argv = [part.format(fixture=ml_dir) for part in argv]
    person = PERSON if command in NEEDS_A_PERSON and not {"--user", "--history", "--history-file"} & set(argv) else []
    data_dir = {MISSING: ["--data-dir", str(tmp_path / "no-data")], FIXTURE: ["--data-dir", str(ml_dir)], NONE: []}[data]
    exit_code, err = run_cli([*command.split(), *argv, *person, *(data_dir if command in DATA_COMMANDS else [])], capsys)
    assert message.format(fixture=ml_dir) in err and exit_code == code
    assert "Traceback" not in err and "Warning" not in err


def test_every_option_of_every_command_has_its_bad_inputs_tested():
    """A value out of range and one of the wrong type for each option that takes a number or text (the flags and the
    options with choices have theirs from the parser). A new option fails here until it has its two cases above."""
    tried = {tuple(case.values[:3]) for case in CASES}
    missing = []
    for command, actions in command_actions().items():
        for action in actions:
            kinds = [TYPE] if action.nargs == 0 else [RANGE] if action.choices else [RANGE, TYPE]
            for option in action.option_strings or [action.dest]:
                missing += [f"{command} {option} ({kind})" for kind in kinds if (command, option, kind) not in tried]
    assert not missing, "no bad-input case for: " + ", ".join(missing)


@pytest.mark.parametrize(
    "argv",
    [["train", "lstm", "--epochs", "0"], ["recommend", "--user", "1", "--k", "0"], ["finetune", "--lr", "-1"]],
    ids=" ".join,
)
def test_bad_options_stop_before_tensorflow_or_torch_load(argv, tmp_path):
    """In a fresh interpreter, as a user runs it: one line on stderr, exit 2, and neither library imported."""
    script = (
        "import sys; from dualrec.cli import main; code = main(sys.argv[1:]); "
        "print(sorted(name for name in ('tensorflow', 'torch') if name in sys.modules)); sys.exit(code)"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script, *argv, "--data-dir", str(tmp_path)], capture_output=True, text=True, cwd=root
    )
    assert done.returncode == 2 and done.stdout.strip() == "[]"
    assert done.stderr.startswith("dualrec: error: Invalid") and len(done.stderr.strip().splitlines()) == 1


def test_option_help_states_each_profiles_default():
    """Flags made from the dataclass fields say their default, or each profile's when the profiles differ."""
    actions = {option: action for action in command_actions()["finetune"] for option in action.option_strings}
    lr = "learning rate (quick 0.002, cpu 0.001, full 0.0002, rerank quick 0.002, rerank full 0.0002, rerank labels quick 0.002)"
    assert actions["--lr"].help == lr and actions["--lr"].default is None
    steps = "(quick 60, cpu 90, full none, rerank quick 200, rerank full none, rerank labels quick 100)"
    assert actions["--steps"].help.endswith(steps)
    assert actions["--r"].help == "rank (default 8)" and actions["--r"].type is int
    assert actions["--target-modules"].type("q_proj, ,v_proj") == ("q_proj", "v_proj")
    data = {option: action for action in command_actions()["data stats"] for option in action.option_strings}
    assert data["--windows-per-user"].dest == "max_windows_per_user" and data["--windows-per-user"].default == 30
