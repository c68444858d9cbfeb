"""``education.KnowledgeTracing``: windows, the seeded validation split, metadata, batches; the real data sets."""

import numpy as np
import pytest

from panconv_education.datasets.knowledge_tracing import KnowledgeTracing, window


def _folder(tmp_path, train: str, test: str = "2\n1,2\n1,0\n"):
    folder = tmp_path / "knowledge-tracing" / "toy"
    folder.mkdir(parents=True)
    (folder / "train.csv").write_text(train)
    (folder / "test.csv").write_text(test)
    return tmp_path


def test_windows_cut_long_histories_into_chunks():
    skills = [np.arange(1, 12)]
    out_s, out_r = window(skills, [np.zeros(11, dtype=np.int64)], max_len=4, min_len=2)
    assert [s.tolist() for s in out_s] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11]]
    out_s, _ = window([np.arange(1, 10)], [np.zeros(9, dtype=np.int64)], max_len=4, min_len=2)
    assert [len(s) for s in out_s] == [4, 4]  # the chunk of one answer predicts nothing: dropped


def _students(n, length=5):
    return "".join(f"{length}\n{','.join(str(1 + (i + j) % 7) for j in range(length))}\n"
                   f"{','.join(str((i * j) % 2) for j in range(length))}\n" for i in range(n))


def test_validation_split_is_seeded_and_disjoint(tmp_path):
    root = _folder(tmp_path, _students(20))
    train = KnowledgeTracing(root, "train", name="toy", val_fraction=0.25, seed=3)
    val = KnowledgeTracing(root, "val", name="toy", val_fraction=0.25, seed=3)
    assert (train.num_students, val.num_students) == (15, 5)
    split = train.student_split(20)
    assert set(split["train"]).isdisjoint(split["val"]) and len(set(split["train"]) | set(split["val"])) == 20
    again = KnowledgeTracing(root, "val", name="toy", val_fraction=0.25, seed=3)
    assert [s.tolist() for s in again.skills] == [s.tolist() for s in val.skills]
    other = KnowledgeTracing(root, "val", name="toy", val_fraction=0.25, seed=4)
    assert [s.tolist() for s in other.skills] != [s.tolist() for s in val.skills]


def test_metadata_is_the_same_for_every_split(tmp_path):
    root = _folder(tmp_path, _students(6), test="2\n9,1\n1,1\n")
    metas = [KnowledgeTracing(root, s, name="toy", max_len=3).metadata for s in ("train", "val", "test")]
    assert {m["num_skills"] for m in metas} == {9}  # the largest id of train.csv and test.csv
    assert {m["max_len"] for m in metas} == {3}


def test_batches_are_right_padded(tmp_path):
    root = _folder(tmp_path, "3\n1,2,3\n1,0,1\n2\n4,4\n0,1\n")
    data = KnowledgeTracing(root, "train", name="toy", val_fraction=0.0)
    batch = data.collate([data[0], data[1]])
    assert batch["skills"].tolist() == [[1, 2, 3], [4, 4, 0]]
    assert batch["responses"].tolist() == [[1, 0, 1], [0, 1, 0]]
    assert batch["mask"].tolist() == [[True, True, True], [True, True, False]]


def test_max_sequences_takes_a_seeded_subset_of_one_split(tmp_path):
    root = _folder(tmp_path, _students(30), test=_students(10))
    kwargs = {"name": "toy", "val_fraction": 0.0, "max_sequences": {"train": 8}}
    a, b = KnowledgeTracing(root, "train", **kwargs), KnowledgeTracing(root, "train", **kwargs)
    assert len(a) == 8 and [s.tolist() for s in a.skills] == [s.tolist() for s in b.skills]
    assert len(KnowledgeTracing(root, "test", **kwargs)) == 10


def test_check_prerequisites(tmp_path):
    assert KnowledgeTracing.check_prerequisites(tmp_path)
    assert KnowledgeTracing.check_prerequisites(_folder(tmp_path, _students(2))) == []


@pytest.mark.parametrize("name, skills, train_students, test_students, train_answers, test_answers, longest", [
    ("assist2009_updated", 110, 2921, 1230, 224218, 101419, 200),
    ("STATICS", 1223, 229, 104, 130184, 59113, 200),
    ("synthetic-5", 50, 2000, 2000, 100000, 100000, 50),
])
def test_real_data_sets_match_their_readme(shared_data, name, skills, train_students, test_students,
                                           train_answers, test_answers, longest):
    """The counts of shared/data/knowledge-tracing/README.md (windows of one answer are the only loss)."""
    if not (shared_data / "knowledge-tracing" / name).is_dir():
        pytest.skip(f"no knowledge-tracing/{name} in {shared_data}")
    splits = {s: KnowledgeTracing(shared_data, s, name=name, min_len=2) for s in ("train", "val", "test")}
    assert {d.num_skills for d in splits.values()} == {skills}
    assert splits["train"].num_students + splits["val"].num_students == train_students
    assert splits["test"].num_students == test_students
    got_train = splits["train"].num_answers + splits["val"].num_answers
    assert train_answers - train_students <= got_train <= train_answers
    assert test_answers - test_students <= splits["test"].num_answers <= test_answers
    assert max(len(s) for s in splits["train"].skills) == longest
