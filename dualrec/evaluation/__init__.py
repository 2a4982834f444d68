"""The scoreboard: protocols, metrics with intervals, results files; every system on the same cases. In a notebook
(protocols that do not apply to a system are skipped, and listed in document["skipped"]):

    from dualrec.data.dataset import load_dataset
    from dualrec.evaluation import LLMAnswers, evaluate, markdown_table

    dataset = load_dataset()  # MovieLens 1M: $DUALREC_DATA_DIR, else downloaded once
    document = evaluate(["lstm", "mostpop", LLMAnswers("smollm2-135m", limit=20)], dataset, ["full", "sampled-20", "freeform"])
    print(markdown_table(document["results"]))
"""

from dualrec.evaluation.freeform import LLMAnswers
from dualrec.evaluation.harness import evaluate
from dualrec.evaluation.results import markdown_table, read_results, write_results

__all__ = ["LLMAnswers", "evaluate", "markdown_table", "read_results", "write_results"]
