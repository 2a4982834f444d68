"""The app on this machine: cold start until the Recommend page is interactive (then until the LSTM's pick shows and
both models have loaded in the background), the LSTM's pick for one user once warm, and both columns of the embedded
model side by side (time to first token and total time).

    python benchmarks/bench_app.py [--data-dir DIR] [--lstm-dir DIR] [--models A,B]
        [--runs 50] [--tokens 64] [--repeats 2] [--no-browser] [--cold-starts 1] [--cold-start-only]
        [--columns-only] [--free] [--former] [--threads N]

Cold start: `streamlit run app.py` on a free loopback port, timed from the server's launch until headless Chromium
shows the whole Recommend page with the user's history (interactive: the LSTM and the models load in the background),
then until the LSTM's pick and the models' "loaded" line show (Debian chromium + playwright; --no-browser times
AppTest's first run instead; --cold-starts N times N starts). The files are in the OS cache (a second start), as they
are on a machine in use. Latency: the trained LSTM (--lstm-dir, else DUALREC_HOME's
models/lstm, which the app reads too), else an untrained one of the same shape (speed does not depend on the weights).
Columns: the app's own path (dualrec.app.comparison) with the app's default columns (`smollm2-135m` and its LoRA
adapter when the models folder has one, else two copies of it) or --models, the page's default prompt (its template
and K: default_prompt) for a test user, the page's default settings (grounded, temperature 0.7, seed 0; --free: not
grounded): each column alone, then all together, each case a new user's prompt answered --repeats times (the first
reads the prompt, the next find it in the model's cache). --former answers as the llama.cpp backend did before (the
whole prompt re-read each time; free: create_chat_completion's stream; grounded: the GBNF grammar line by line, from
bench_grounded). --threads sets each llama.cpp model's threads (default: the backend's, half the cores).
--columns-only skips the cold start and the LSTM.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from pathlib import Path

from bench_grounded import gbnf_answer
from bench_stage1 import untrained

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dualrec.app.comparison import SharedModel, plan_columns, start_comparison  # noqa: E402
from dualrec.app.recordings import RecordingStore  # noqa: E402
from dualrec.app.tables import default_models, default_prompt, lstm_ranking, model_choices  # noqa: E402
from dualrec.config import ENV_DATA_DIR, ENV_HOME, LSTMConfig, paths  # noqa: E402
from dualrec.data.dataset import Dataset, load_dataset  # noqa: E402
from dualrec.grounding.pipeline import load_trained_lstm, lstm_top1, prepare_prompt, user_history  # noqa: E402
from dualrec.llm import GenerationSettings, load_backend  # noqa: E402
from tests.loopback import CHROMIUM, free_port, launch_chromium  # noqa: E402

REAL_DATA = ROOT.parent / "shared" / "data" / "ml-1m-full-order"


def cold_start_browser(data_dir: str) -> dict[str, float]:
    """Seconds from `streamlit run` until the server answers; until the Recommend page is interactive (the whole page
    drawn with the user's history, the LSTM still loading in the background); until the LSTM's pick shows; and until
    both models have loaded in the background."""
    from playwright.sync_api import Error, sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with sync_playwright() as driver, tempfile.TemporaryFile() as log:
        browser = launch_chromium(driver)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(600_000)
        started = time.perf_counter()
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true"],
            cwd=ROOT,
            env=os.environ | {ENV_DATA_DIR: data_dir},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            while True:
                try:
                    page.goto(url, timeout=2000)
                    break
                except Error:
                    time.sleep(0.2)
            seconds = {"server answers": time.perf_counter() - started}
            page.get_by_text("5 · Genre overlap").wait_for()
            page.locator('[data-testid="stDataFrame"]').first.wait_for()
            seconds["page interactive (history shown)"] = time.perf_counter() - started
            page.get_by_text("LSTM top-1").or_(page.get_by_text("No trained LSTM")).first.wait_for()
            seconds["LSTM pick shown"] = time.perf_counter() - started
            page.get_by_text("Models loaded in").or_(page.get_by_text("could not be loaded")).first.wait_for()
            seconds["both models loaded"] = time.perf_counter() - started
            return seconds
        finally:
            server.terminate()
            server.wait(30)
            browser.close()


def cold_start_apptest(data_dir: str) -> dict[str, float]:
    """Seconds of AppTest's first run of the app (imports, data, LSTM and page, no browser)."""
    from streamlit.testing.v1 import AppTest

    os.environ[ENV_DATA_DIR] = data_dir
    started = time.perf_counter()
    AppTest.from_file(str(ROOT / "app.py"), default_timeout=600).run()
    return {"AppTest first run": time.perf_counter() - started}


def lstm_latency(dataset: Dataset, runs: int) -> dict[str, float]:
    """Milliseconds (p50, p95) of the LSTM's top-1 and of the page's top-10 table, for single test users, warm."""
    lstm, note = load_trained_lstm(dataset)
    if lstm is None:
        print(f"  ({note.split('.')[0]}: timing an untrained LSTM of the same shape)")
        lstm = untrained(dataset, LSTMConfig())
    users = [int(u) for u in dataset.split_users["test"][:runs]]
    histories = [user_history(dataset, u) for u in users]
    lstm_top1(dataset, lstm, histories[0])  # compile
    figures = {}
    for name, call in (
        ("top-1", lambda h: lstm_top1(dataset, lstm, h)),
        ("top-10 table", lambda h: lstm_ranking(dataset, lstm, h)),
    ):
        times = []
        for history in histories:
            started = time.perf_counter()
            call(history)
            times.append((time.perf_counter() - started) * 1000)
        figures[f"{name} p50 ms"] = statistics.median(times)
        figures[f"{name} p95 ms"] = statistics.quantiles(times, n=20)[-1]
    return figures


def former_stream(backend, messages, settings: GenerationSettings, stop) -> Iterator[str]:
    """A free llama.cpp answer as the backend wrote it before: the whole prompt re-read, create_chat_completion's stream."""
    with backend._lock:
        backend.llama.reset()
        chunks = backend.llama.create_chat_completion(
            messages=messages,
            stream=True,
            max_tokens=settings.max_new_tokens,
            temperature=settings.temperature if settings.sampling else 0.0,
            top_p=settings.top_p,
            seed=settings.seed,
        )
        for chunk in chunks:
            if stop.is_set():
                return
            if text := chunk["choices"][0]["delta"].get("content"):
                yield text


def former_grounded(backend, messages, settings: GenerationSettings, stop, constraint) -> Iterator[str]:
    """A grounded llama.cpp answer as the backend wrote it before: the GBNF grammar of the choices left, line by line."""
    with backend._lock:
        yield from gbnf_answer(backend, messages[-1]["content"], constraint)


def loader(threads: int | None, former: bool):
    """The app's loader (cached as its st.cache_resource is), each llama.cpp model on `threads` threads, answering as
    it did before when `former`."""
    import llama_cpp

    def load(spec: str, replica: int) -> SharedModel:
        backend = load_backend(spec)
        if threads and hasattr(backend, "llama"):
            llama_cpp.llama_set_n_threads(backend.llama.ctx, threads, threads)
        if former and hasattr(backend, "llama"):
            backend._stream = types.MethodType(former_stream, backend)
            backend._stream_grounded = types.MethodType(former_grounded, backend)
        return SharedModel(backend)

    return functools.cache(load)


def column_runs(dataset: Dataset, specs: list[str], args: argparse.Namespace) -> Iterator[dict]:
    """Each column alone, then all at once, each case a new test user's prompt answered `args.repeats` times: per
    answer, the time to its first token, tokens/s and total seconds."""
    load = loader(args.threads, args.former)
    started = time.perf_counter()
    plan_columns(specs, "", GenerationSettings(), load, RecordingStore(Path(tempfile.mkdtemp())), presenting=False)
    print(f"  loading {' and '.join(specs)}: {time.perf_counter() - started:.2f} s")
    lstm, note = load_trained_lstm(dataset)
    default, _ = default_prompt(specs)
    settings = GenerationSettings(max_new_tokens=args.tokens, temperature=0.7, seed=0)  # the page's defaults
    cases = [[spec] for spec in dict.fromkeys(specs)] + [specs]
    with tempfile.TemporaryDirectory() as folder:
        store = RecordingStore(Path(folder))
        for case, case_specs in enumerate(cases):
            history = user_history(dataset, int(dataset.split_users["test"][case]))
            prompt = prepare_prompt(dataset, history, lstm_top1(dataset, lstm, history), default.template, default.k, note)
            for repeat in range(args.repeats):
                columns = plan_columns(case_specs, prompt.text, settings, load, store, False, grounded=not args.free)
                comparison = start_comparison(prompt, columns, store, dataset=dataset)
                comparison.streams.wait()
                for column in columns:
                    answer = comparison.answers[column.label]
                    if answer.error:
                        raise SystemExit(f"{column.spec}: {answer.error}")
                    yield {
                        "case": " + ".join(case_specs) if len(case_specs) > 1 else f"{case_specs[0]} alone",
                        "prompt": "new" if repeat == 0 else "again",
                        "column": f"{column.label} {column.spec}",
                        "first token s": answer.first_chunk_s,
                        "tokens/s": answer.chunks_per_s,
                        "total s": answer.finished_s,
                        "tokens": len(answer.chunks),
                    }


def bench_columns(dataset: Dataset, args: argparse.Namespace) -> None:
    specs = args.models.split(",") if args.models else list(default_models(model_choices(paths().models)))
    default, why = default_prompt(specs)
    how = f"{'free' if args.free else 'grounded'}, {'the former llama.cpp decoding' if args.former else 'ours'}"
    threads = f"{args.threads} llama.cpp threads each" if args.threads else "llama.cpp threads: the backend's default"
    print(f"columns ({', '.join(specs)}): {default.template}, K {default.k} ({why}); {how}; {threads}")
    print(f"  {args.tokens} new tokens at most; load average {os.getloadavg()[0]:.1f}")
    for row in column_runs(dataset, specs, args):
        rate = f"{row['tokens/s']:.1f}" if row["tokens/s"] else "-"
        print(
            f"  {row['case']:<40} prompt {row['prompt']:<5} {row['column']:<36} first token {row['first token s']:5.2f} s, "
            f"{row['tokens']:3d} tokens at {rate:>5} tokens/s, total {row['total s']:6.2f} s",
            flush=True,
        )
    print(f"  load average after: {os.getloadavg()[0]:.1f}")


def use_lstm(folder: Path) -> None:
    """Point DUALREC_HOME (this process and the server it starts) at a temporary home whose models/lstm is `folder`
    (and whose models/adapters are a copy of the current home's)."""
    adapters = paths().models / "adapters"
    home = Path(tempfile.mkdtemp(prefix="bench-app-"))
    (home / "models").mkdir()
    (home / "models" / "lstm").symlink_to(folder.resolve())
    if adapters.is_dir():
        shutil.copytree(adapters, home / "models" / "adapters")  # the app's search does not follow links
    os.environ[ENV_HOME] = str(home)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get(ENV_DATA_DIR) or str(REAL_DATA))
    parser.add_argument("--runs", type=int, default=50, help="test users timed for the LSTM (default %(default)s)")
    parser.add_argument("--tokens", type=int, default=64, help="max new tokens per answer (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="side-by-side generations (default %(default)s)")
    parser.add_argument("--no-browser", action="store_true", help="time AppTest's first run instead of a browser")
    parser.add_argument("--cold-starts", type=int, default=1, help="cold starts timed, one after the other (default %(default)s)")
    parser.add_argument("--cold-start-only", action="store_true", help="time the cold starts only")
    parser.add_argument("--lstm-dir", help="a trained LSTM folder for the app and the timings (default: DUALREC_HOME's)")
    parser.add_argument("--models", help="the two columns' models, comma-separated (default: the app's default columns)")
    parser.add_argument("--columns-only", action="store_true", help="time the columns only")
    parser.add_argument("--free", action="store_true", help="the columns answer free, not grounded")
    parser.add_argument("--former", action="store_true", help="llama.cpp answers as it did before (reference)")
    parser.add_argument("--threads", type=int, help="llama.cpp threads per model (default: the backend's)")
    args = parser.parse_args()
    if args.columns_only:
        bench_columns(load_dataset(args.data_dir), args)
        return
    if args.lstm_dir:
        use_lstm(Path(args.lstm_dir))
    print(f"data: {args.data_dir}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    use_browser = not args.no_browser and CHROMIUM.is_file()
    for run in range(1, args.cold_starts + 1):
        print(f"cold start {run} (load average {os.getloadavg()[0]:.1f})")
        for name, seconds in (cold_start_browser(args.data_dir) if use_browser else cold_start_apptest(args.data_dir)).items():
            print(f"  {name}: {seconds:.1f} s")
    if args.cold_start_only:
        return

    dataset = load_dataset(args.data_dir)
    print("LSTM, one user, warm")
    for name, value in lstm_latency(dataset, args.runs).items():
        print(f"  {name}: {value:.1f}")

    bench_columns(dataset, args)


if __name__ == "__main__":
    main()
