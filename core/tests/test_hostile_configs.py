"""Hostile configs and ``--set`` values (issue 11): every one is stopped at validation with one
readable line naming the file (or ``--set``), within a time limit, with no traceback.

The corpus is generated here (no committed blobs); each case runs ``panconv run --dry-run``.
"""

import textwrap
import warnings

import pytest

from panconv.cli import main

VALID = textwrap.dedent("""\
    model:
      backbone: {type: core.MLP, hidden: [8]}
      head: {type: core.LinearClsHead}
    data: {type: core.GaussianBlobs, num_classes: 3, batch_size: 16}
    train: {epochs: 1}
    """)


def _laughs(levels: int = 12) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines)


def _nested(levels: int) -> str:
    return "model: " + "[" * levels + "]" * levels + "\n"


#: (name, file bytes or None for VALID, --set overrides, text the one-line error must contain)
CASES = [
    ("billion laughs in a file", (VALID + _laughs() + "\nrun: {work_dir: *a11}\n").encode(), [],
     "expands to more than 100,000 values"),
    ("billion laughs in --set", None, ["run.work_dir=" + _laughs().replace("\n", ", ").join("{}")],
     "expands to more than 100,000 values"),
    ("deep nesting", _nested(900).encode(), [], "invalid YAML"),
    ("nesting past the limit", _nested(80).encode(), [], "nested deeper than 64 levels"),
    ("latin-1 file", ("# caf\xe9\n" + VALID).encode("latin-1"), [], "not UTF-8 text"),
    ("utf-16 file", VALID.encode("utf-16"), [], "not UTF-8 text"),
    ("binary file", bytes(range(256)) * 4, [], "not UTF-8 text"),
    ("unhashable key", (VALID + "eval: {[1, 2]: 3}\n").encode(), [], "a key must be a plain value"),
    ("mapping key", (VALID + "eval: {{a: 1}: 3}\n").encode(), [], "a key must be a plain value"),
    ("newline in a key", (VALID + 'run: {"work\\ndir": x}\n').encode(), [], "run.work\\ndir: unknown key"),
    ("100 kB key", (VALID + "run:\n  ? " + "k" * 100_000 + "\n  : 1\n").encode(), [], "run.kkkk"),
    ("5 MB value", None, ["model.backbone.dropout=" + "x" * 5_000_000], "core.MLP expects float"),
    ("null for an int", None, ["model.backbone.in_dim=null"], "core.MLP expects int, got null"),
    ("null for a list", None, ["model.backbone.hidden=null"], "expects a list of int, got null"),
    ("string for a list", None, ["model.backbone.hidden=abc"], "expects a list of int, got str 'abc'"),
    ("list element", None, ["model.backbone.hidden=[8, a]"], "item 1: int, got str 'a'"),
    ("inf in an int list", None, ["model.backbone.hidden=[.inf]"], "item 0: int, got float inf"),
    ("negative classes", None, ["model.head.num_classes=-1"], "a value >= 1, got -1"),
    ("zero size", None, ["data.size=0"], "a value >= 1, got 0"),
    ("negative dropout", None, ["model.backbone.dropout=-1"], "a value >= 0, got -1"),
    ("negative lr", None, ["train.optimizer.lr=-1"], "Invalid learning rate"),
    ("seed too large", None, [f"run.seed={2**40}"], "run.seed: must be in 0 ... 2**32 - 1"),
    ("launcher outside torchrun", None, ["run.launcher=pytorch"], "needs the environment torchrun sets"),
    ("width bomb", None, [f"model.backbone.hidden=[{2**62}]"], "Storage size calculation overflowed"),
    ("size bomb in a list", None, ["model.backbone.hidden=[100000, 100000, 100000, 100000, 100000, 100000, 100000, "
                                   "100000, 100000, 100000, 100000, 100000]"], "would build more than"),
    ("work dir under a file", None, ["run.work_dir=/etc/hostname/sub"], "is a file, not a folder"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name,content,overrides,expected", CASES, ids=[c[0] for c in CASES])
def test_hostile_config_is_one_line(tmp_path, capsys, name, content, overrides, expected):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(VALID.encode() if content is None else content)
    args = ["run", str(path), "--dry-run"]
    for override in overrides:
        args += ["--set", override]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err[:500]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err[:2000]
    assert "Traceback" not in err and len(lines[0]) < 600, lines[0][:1000]
    assert str(path) in lines[0] or "--set" in lines[0]
    if expected is not None:
        assert expected in lines[0], lines[0]


@pytest.mark.timeout(60)
def test_a_non_utf8_base_file_is_named(tmp_path, capsys):
    (tmp_path / "base.yaml").write_bytes(("# \xff\n" + VALID).encode("latin-1"))
    (tmp_path / "cfg.yaml").write_text("_base_: base.yaml\n")
    assert main(["run", str(tmp_path / "cfg.yaml"), "--dry-run"]) == 2
    assert f"{tmp_path / 'base.yaml'}: not UTF-8 text" in capsys.readouterr().err


@pytest.mark.timeout(30)
@pytest.mark.parametrize("content,expected", [
    (b"0,1.0,2.0\n1,nan,2.0\n", ":2: NaN or inf"),
    (b"0,1.0,inf\n", ":1: NaN or inf"),
    ("0,1.0,2.0\n".encode("utf-16"), "not UTF-8 text"),
    (b"\n\n", "no samples"),
    (b"x" * 5_000_000 + b"\n", ":1: expected 'label,x1,...,x2' with numbers"),
    (b"7,1.0,2.0\n", ":1: expected a label in [0, 3)"),
])
def test_hostile_blob_files_are_one_line(tmp_path, content, expected):
    from panconv.builtin.components import GaussianBlobs
    from panconv.errors import DataError

    path = tmp_path / "blobs.csv"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        GaussianBlobs(split="train", file=str(path), dim=2, num_classes=3)
    message = str(info.value)
    assert str(path) in message and expected in message and "\n" not in message and len(message) < 400


@pytest.mark.timeout(120)
def test_a_non_finite_loss_names_the_data(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "cfg.yaml"
    path.write_text(VALID)
    code = main(["run", str(path), "--quiet", "--set", "data.spread=.nan", "--set", "data.size=32"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "the training loss is not finite (nan); the batch holds NaN/inf in inputs: check the data file(s) of " \
           "core.GaussianBlobs split 'train'" in err[0]


def test_the_testing_helper_for_bad_values(tmp_path):
    from panconv.testing import assert_rejected_at_validation, dry_run

    path = tmp_path / "cfg.yaml"
    path.write_text(VALID)
    assert dry_run(path)[0] == 0
    line = assert_rejected_at_validation(path, "model.head.num_classes=0", "model.head.num_classes")
    assert line.endswith("core.LinearClsHead expects a value >= 1, got 0")
    with pytest.raises(AssertionError, match="exit code 0, expected 2"):
        assert_rejected_at_validation(path, "model.head.num_classes=4", "model.head.num_classes")
    with pytest.raises(AssertionError, match="expected one line"):
        assert_rejected_at_validation(path, "model.head.num_classes=0", "model.backbone.hidden")
