"""Store entries load in other tools as they are: Optimum's ORTModelFor* and transformers' pipelines.

    python tests/benchmarks/check_other_tools.py [--optimum-venv /tmp/pocket-optimum-venv]

Converts the real minilm-sst2 and minilm-squad checkpoints (../shared/models) into a temporary store, then, in
the Optimum venv (tests/benchmarks/make_optimum_venv.sh), loads each entry's `fp32/` and `int8/` folder straight
from the store path with `ORTModelFor*.from_pretrained(folder, file_name="model.onnx")` inside a transformers
pipeline, and compares its labels/answers and scores with Pocket NLP's own on the same inputs. An entry folder
name with '@' failed here before (huggingface_hub read the path as `repo@revision`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

TEXTS = ["a gripping, beautifully acted film", "the plot is dull and the jokes fall flat",
         "not bad at all", "I wanted to like it, but it never comes alive", "an instant classic"]
QUESTIONS = [("Where is the Eiffel Tower?", "The Eiffel Tower is a wrought-iron tower in Paris, France."),
             ("Who designed it?", "It was designed by the company of the engineer Gustave Eiffel in 1887.")]

OTHER_SIDE = r'''
import json, sys
from transformers import AutoTokenizer, pipeline
from optimum.onnxruntime import ORTModelForQuestionAnswering, ORTModelForSequenceClassification
task, folder, inputs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
cls = ORTModelForSequenceClassification if task == "text-classification" else ORTModelForQuestionAnswering
model = cls.from_pretrained(folder, file_name="model.onnx")
pipe = pipeline(task, model=model, tokenizer=AutoTokenizer.from_pretrained(folder))
if task == "text-classification":
    out = [pipe(t)[0] for t in inputs]
else:
    out = [pipe(question=q, context=c) for q, c in inputs]
print(json.dumps(out))
'''


def ours(entry, task: str, inputs: list) -> dict:
    from app.core.tasks import get_task
    from app.core.tasks.base import PredictRequest
    from app.core.tasks.runner import Runner

    plugin = get_task(task)
    results = {}
    for precision, folder in (("fp32", entry.fp32_dir), ("int8", entry.int8_dir)):
        runner = Runner.load(folder)
        if task == "text-classification":
            results[precision] = [(p.label, p.score) for p in (plugin.predict(runner, PredictRequest(texts=(t,)))[0]
                                                               for t in inputs)]
        else:
            results[precision] = []
            for q, c in inputs:
                answer = plugin.predict(runner, PredictRequest(question=q, context=c))[0]
                results[precision].append((answer.text, answer.score))
    return results


def main() -> int:
    from app.core.store import convert
    from tests.benchmarks.machine import describe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimum-venv", default="/tmp/pocket-optimum-venv")
    args = parser.parse_args()
    python = Path(args.optimum_venv) / "bin" / "python"
    if not python.is_file():
        print(f"No Optimum venv at {args.optimum_venv}: run tests/benchmarks/make_optimum_venv.sh first.")
        return 2
    print(describe())
    ok = True
    with tempfile.TemporaryDirectory() as store:
        for name, task, inputs in (("minilm-sst2", "text-classification", TEXTS),
                                   ("minilm-squad", "question-answering", QUESTIONS)):
            entry = convert(str(SHARED / "models" / name), root=Path(store))
            print(f"\n{name}: store entry {entry.path.name}")
            mine = ours(entry, task, inputs)
            for precision, folder in (("fp32", entry.fp32_dir), ("int8", entry.int8_dir)):
                run = subprocess.run([str(python), "-c", OTHER_SIDE, task, str(folder), json.dumps(inputs)],
                                     capture_output=True, text=True, timeout=600)
                if run.returncode != 0:
                    print(f"  {precision}: Optimum could not load {folder}:\n{run.stderr[-2000:]}")
                    ok = False
                    continue
                theirs = json.loads(run.stdout.strip().splitlines()[-1])
                key = "label" if task == "text-classification" else "answer"
                same = sum(a[0].strip() == t[key].strip() for a, t in zip(mine[precision], theirs))
                diff = max(abs(a[1] - t["score"]) for a, t in zip(mine[precision], theirs))
                print(f"  {precision}: loaded by Optimum from the store path as it is; same {key} on "
                      f"{same}/{len(theirs)}, max score difference {diff:.2e}")
                ok &= same == len(theirs) and diff < 1e-3
    print("\nOK: both tools give the same answers" if ok else "\nMISMATCH (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
