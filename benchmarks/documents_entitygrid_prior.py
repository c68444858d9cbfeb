"""The blind baseline of EntityGrid-QA: answer every test question with the most frequent answer of the same
question (same words) among ``--train`` generated training questions, never looking at the image. The floor a
model that does not read the image cannot beat (HiRes-LLaVA section of plugins/documents/README.md).

    OMP_NUM_THREADS=1 python benchmarks/documents_entitygrid_prior.py [--train 30000] [--test 1000]
"""

import argparse
from collections import Counter, defaultdict

from panconv_documents.datasets.entitygrid import TASKS, EntityGridQA


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=30000)
    parser.add_argument("--test", type=int, default=1000)
    args = parser.parse_args()
    train, test = EntityGridQA(split="train", n=args.train), EntityGridQA(split="test", n_eval=args.test)
    answers = defaultdict(Counter)
    for i in range(len(train)):
        sample = train[i]
        answers[tuple(sample["question"].tolist())][sample["answer"]] += 1
    correct = defaultdict(list)
    for i in range(len(test)):
        sample = test[i]
        seen = answers.get(tuple(sample["question"].tolist()))
        hit = bool(seen) and seen.most_common(1)[0][0] == sample["answer"]
        correct["accuracy"].append(hit)
        correct[f"accuracy/{TASKS[sample['task']]}"].append(hit)
        correct["accuracy/boundary" if sample["on_boundary"] else "accuracy/interior"].append(hit)
    print(" ".join(f"{k}={100 * sum(v) / len(v):.1f}" for k, v in correct.items()))


if __name__ == "__main__":
    main()
