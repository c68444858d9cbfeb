"""Knowledge-graph completion data: triples and hyper-relational facts, as link-prediction queries.

**File format** (``<dir>/{train,valid,test}.txt``): one fact per line, tab-separated,
``head<TAB>relation<TAB>tail[<TAB>qualifier_key<TAB>qualifier_value]...`` with any string labels
(the format of the Nations/Kinships/UMLS files of the ``pykeen`` wheel, extended by qualifier
pairs as in the WD50K/JF17K statement files). Labels are mapped to ids in sorted order over all
three files; qualifier keys share the relation vocabulary and qualifier values the entity one.

**Where the files are.** ``name: nations | kinships | umls``: ``<root>/kg/<name>/`` when that folder
exists, otherwise the folder the ``pykeen`` package installs them to
(``site-packages/pykeen/datasets/<name>/``; found with ``importlib.util.find_spec``, pykeen itself
is never imported: ``pip install --no-deps pykeen`` is enough). Any other name reads
``<root>/kg/<name>/``. ``name: synthetic-hyper`` generates facts instead (:func:`generate_hyper_facts`).

**Queries.** Every fact ``(h, r, t, Q)`` gives two queries, as in HyperFormer: the tail query
``[h, r, MASK, q1, v1, ...]`` (answer ``t``) and the head query ``[t, r^-1, MASK, q1, v1, ...]``
(answer ``h``). Sequences are token ids in one vocabulary (:data:`SPECIALS` first, then entities,
then relations, then inverse relations: :func:`entity_token`, :func:`relation_token`); unused
qualifier slots are ``PAD``. Each query carries ``n_neighbors`` neighbour prompts of its query
entity ``e`` drawn from the training facts (``[t, r^-1, MASK]`` for a fact ``(e, r, t)``,
``[h, r, MASK]`` for ``(h, r, e)``; their answer is ``e``), the entity-neighbour context of
HyperFormer. A training query never sees its own fact among them (the reference code samples
from all training facts, so its training context can contain the answer); an entity with no
training fact gets ``[e, NO_RELATION, MASK]``. Training draws the prompts anew each epoch from
``numpy.random.default_rng((seed, epoch, index))``; evaluation draws them once from the seed.

**Filtered protocol.** A query's ``filter_items`` are the other correct answers of the same
query in train + valid + test (to be removed from the ranking). ``filter_by: statement`` (default)
matches queries with their qualifiers (the hyper-relational protocol of StarE/HyperFormer papers);
``filter_by: triple`` ignores qualifiers (what the HyperFormer code does).

Malformed lines (fewer than 3 fields, an odd number of qualifier fields, empty labels, not UTF-8)
raise a one-line ``DataError`` naming ``file:line``.
"""

from __future__ import annotations

import importlib.util
from collections import defaultdict
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from annotated_types import Interval

from panconv.api import Dataset
from panconv.errors import DataError

#: special tokens: padding, the masked answer, "no relation" (an isolated entity's neighbour
#: prompt), and the "no qualifier" key/value pair of a fact without qualifiers
PAD, MASK, NO_RELATION, NO_QUAL_KEY, NO_QUAL_VALUE = range(5)
SPECIALS = 5
PYKEEN_DATASETS = ("nations", "kinships", "umls")
_FILES = {"train": "train.txt", "val": "valid.txt", "test": "test.txt"}


def entity_token(entity, n_entities: int | None = None):
    """Token id of entity id(s)."""
    return entity + SPECIALS


def relation_token(relation, n_entities: int, n_relations: int, inverse: bool = False):
    """Token id of relation id(s) (``inverse``: of ``relation^-1``)."""
    return relation + SPECIALS + n_entities + (n_relations if inverse else 0)


def vocab_size(n_entities: int, n_relations: int) -> int:
    return SPECIALS + n_entities + 2 * n_relations


# ----------------------------------------------------------------------------- reading files
def read_fact_file(path: Path) -> list[tuple[str, ...]]:
    """The facts of one file as tuples of labels ``(h, r, t, q1, v1, ...)``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (expected tab-separated 'head relation tail [key value]...' "
                        f"lines)") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None
    facts = []
    for lineno, line in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 3 or len(fields) % 2 == 0:
            shown = repr(line) if len(line) <= 60 else repr(line[:57]) + "..."
            raise DataError(f"{path}:{lineno}: expected tab-separated 'head relation tail' and qualifier "
                            f"'key value' pairs, got {len(fields)} field(s): {shown}")
        if any(not f.strip() for f in fields):
            raise DataError(f"{path}:{lineno}: empty label in field {[f.strip() for f in fields].index('') + 1}")
        facts.append(tuple(f.strip() for f in fields))
    if not facts:
        raise DataError(f"{path}: no facts")
    return facts


def pykeen_folder(name: str) -> Path | None:
    """Where the installed ``pykeen`` package keeps data set ``name`` (None if not installed); no import."""
    try:
        spec = importlib.util.find_spec("pykeen")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / name
    return folder if folder.is_dir() else None


# ----------------------------------------------------------------------------- the generator
def generate_hyper_facts(n_clusters: int = 10, cluster_size: int = 10, n_relations: int = 4,
                         n_contexts: int = 4, n_hubs: int = 20, seed: int = 0, split_fractions=(0.8, 0.1, 0.1)):
    """Hyper-relational facts whose ``context`` qualifier decides the answer (labels as strings).

    Entities: ``n_clusters x cluster_size`` members ``e<c>_<m>`` (cluster ``c``), ``n_hubs`` hubs
    ``hub<j>``, and the qualifier values ``ctx<k>`` / ``noise<k>`` (``n_contexts`` each). For every
    relation ``r``, context ``k`` and cluster ``c`` a hub ``H[r, k, c]`` is drawn (uniformly, from
    ``seed``); the facts are all ``(e<c>_<m>, r, hub<H[r, k, c]>, {context: ctx<k>, noise: noise<j>})``
    with ``j`` random (a qualifier that carries nothing). Without the qualifiers, a query ``(member,
    r, ?)`` has up to ``n_contexts`` equally likely answers; with them one. Held-out facts are
    predictable: the member's cluster shows in its other facts and ``H[r, k, c]`` in the facts of
    the other members of the cluster. The facts are shuffled (from ``seed``) and cut into
    train/valid/test by ``split_fractions``.
    """
    rng = np.random.default_rng(seed)
    hub = rng.integers(n_hubs, size=(n_relations, n_contexts, n_clusters))
    facts = []
    for r in range(n_relations):
        for k in range(n_contexts):
            for c in range(n_clusters):
                for m in range(cluster_size):
                    noise = int(rng.integers(n_contexts))
                    facts.append((f"e{c}_{m}", f"r{r}", f"hub{hub[r, k, c]}", "context", f"ctx{k}", "noise",
                                  f"noise{noise}"))
    order = rng.permutation(len(facts))
    facts = [facts[i] for i in order]
    n_train = int(round(split_fractions[0] * len(facts)))
    n_valid = int(round(split_fractions[1] * len(facts)))
    return {"train": facts[:n_train], "val": facts[n_train:n_train + n_valid], "test": facts[n_train + n_valid:]}


# ----------------------------------------------------------------------------- the dataset
class KGFacts(Dataset):
    """Link-prediction queries over triples or hyper-relational facts (see the module docstring).

    Items: ``seq`` (L,) token ids ``[e, r, MASK, q1, v1, ...]``, ``labels`` (answer entity id),
    ``neighbors`` (n_neighbors, 3) prompts and, in evaluation splits, the filter list. Metadata:
    ``n_entities``, ``n_relations``, ``max_qualifiers``.
    """

    metadata_keys = ("n_entities", "n_relations", "max_qualifiers")

    def __init__(self, root=None, split: str = "train", name: str = "nations",
                 n_neighbors: Annotated[int, Interval(ge=1, le=64)] = 3,
                 max_qualifiers: Annotated[int, Interval(ge=0, le=64)] | None = None,
                 filter_by: Literal["statement", "triple"] = "statement",
                 seed: Annotated[int, Interval(ge=0, le=2**32 - 1)] = 0,
                 folder: str | None = None,
                 synthetic: dict | None = None):
        super().__init__(root, split)
        if filter_by not in ("statement", "triple"):
            raise ValueError(f"KGFacts: filter_by must be 'statement' or 'triple', got {filter_by!r}")
        if not 1 <= n_neighbors <= 64:
            raise ValueError(f"KGFacts: n_neighbors must be in 1..64, got {n_neighbors}")
        self.name, self.seed, self.n_neighbors, self.filter_by = name, int(seed), int(n_neighbors), filter_by
        self.epoch = 0
        raw = self._load(name, folder, synthetic)
        entities = sorted({x for facts in raw.values() for f in facts for x in (f[0], f[2], *f[4::2])})
        relations = sorted({x for facts in raw.values() for f in facts for x in (f[1], *f[3::2])})
        self.entities, self.relations = entities, relations
        self.n_entities, self.n_relations = len(entities), len(relations)
        ent = {e: i for i, e in enumerate(entities)}
        rel = {r: i for i, r in enumerate(relations)}
        widest = max(len(f) - 3 for facts in raw.values() for f in facts) // 2
        self.max_qualifiers = widest if max_qualifiers is None else int(max_qualifiers)
        facts = {s: [(ent[f[0]], rel[f[1]], ent[f[2]], tuple((rel[k], ent[v]) for k, v in zip(f[3::2], f[4::2])))
                     for f in raw[s]] for s in raw}
        self._build(facts)

    # ---- loading
    def _load(self, name: str, folder: str | None, synthetic: dict | None) -> dict[str, list]:
        if name == "synthetic-hyper":
            try:
                return generate_hyper_facts(**{"seed": 0, **(synthetic or {})})
            except TypeError as exc:
                raise ValueError(f"KGFacts: bad synthetic settings {synthetic}: {exc}") from None
        if folder is not None:
            path = Path(folder)
        else:
            path = self.root / "kg" / name
            if not path.is_dir() and name in PYKEEN_DATASETS:
                path = pykeen_folder(name) or path
        if not path.is_dir():
            hint = " or `pip install --no-deps pykeen` (its wheel ships it)" if name in PYKEEN_DATASETS else ""
            raise DataError(f"KGFacts: no folder {path} for data set '{name}': put train.txt/valid.txt/test.txt "
                            f"there{hint}")
        self.folder = path
        return {s: read_fact_file(path / f) for s, f in _FILES.items()}

    def _build(self, facts: dict[str, list]) -> None:
        n_e, n_r = self.n_entities, self.n_relations
        width = 3 + 2 * self.max_qualifiers
        # neighbour prompts of each entity from the training facts: (prompt, fact index)
        prompts: dict[int, list] = defaultdict(list)
        for i, (h, r, t, _) in enumerate(facts["train"]):
            prompts[h].append(((entity_token(t), relation_token(r, n_e, n_r, True), MASK), i))
            prompts[t].append(((entity_token(h), relation_token(r, n_e, n_r), MASK), i))
        self._prompts = {e: (np.array([p for p, _ in v], dtype=np.int64), np.array([i for _, i in v]))
                         for e, v in prompts.items()}
        # the correct answers of every query, over all splits (filtered protocol)
        answers: dict[tuple, set] = defaultdict(set)
        for split_facts in facts.values():
            for h, r, t, q in split_facts:
                key_q = tuple(sorted(q[: self.max_qualifiers])) if self.filter_by == "statement" else ()
                answers[(h, r, False, key_q)].add(t)
                answers[(t, r, True, key_q)].add(h)
        own = facts[self.split]
        seqs, labels, query_entity, fact_index, filters = [], [], [], [], []
        for i, (h, r, t, q) in enumerate(own):
            quals = q[: self.max_qualifiers]
            qual_tokens = [tok for k, v in quals for tok in (relation_token(k, n_e, n_r), entity_token(v))]
            key_q = tuple(sorted(quals)) if self.filter_by == "statement" else ()
            for e, answer, inverse in ((h, t, False), (t, h, True)):
                seq = [entity_token(e), relation_token(r, n_e, n_r, inverse), MASK, *qual_tokens]
                seqs.append(seq + [PAD] * (width - len(seq)))
                labels.append(answer)
                query_entity.append(e)
                fact_index.append(i)
                filters.append(sorted(answers[(e, r, inverse, key_q)] - {answer}))
        self.seqs = torch.tensor(seqs, dtype=torch.int64).reshape(-1, width)
        self.labels = torch.tensor(labels, dtype=torch.int64)
        self.query_entity = np.array(query_entity, dtype=np.int64)
        self.fact_index = np.array(fact_index, dtype=np.int64)
        self.filters = [torch.tensor(f, dtype=torch.int64) for f in filters]

    # ---- samples
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def neighbors(self, index: int) -> torch.Tensor:
        """``(n_neighbors, 3)`` neighbour prompts of query ``index`` (sampled with replacement if too few)."""
        e = int(self.query_entity[index])
        found = self._prompts.get(e)
        train = self.split == "train"
        if found is not None and train:
            keep = found[1] != self.fact_index[index]
            found = (found[0][keep], found[1][keep]) if not keep.all() else found
        if found is None or len(found[0]) == 0:
            return torch.tensor([[entity_token(e), NO_RELATION, MASK]] * self.n_neighbors, dtype=torch.int64)
        rng = np.random.default_rng((self.seed, self.epoch if train else 0, index))
        pool = found[0]
        pick = rng.choice(len(pool), self.n_neighbors, replace=len(pool) < self.n_neighbors)
        return torch.from_numpy(pool[pick])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"seq": self.seqs[index], "labels": self.labels[index], "neighbors": self.neighbors(index),
                "filter_items": self.filters[index]}

    def collate(self, samples: list[dict]) -> dict:
        counts = torch.tensor([len(s["filter_items"]) for s in samples], dtype=torch.int64)
        offsets = torch.zeros(len(samples) + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=offsets[1:])
        return {"seq": torch.stack([s["seq"] for s in samples]),
                "labels": torch.stack([s["labels"] for s in samples]),
                "neighbors": torch.stack([s["neighbors"] for s in samples]),
                "filter_items": torch.cat([s["filter_items"] for s in samples]),
                "filter_offsets": offsets}

    @property
    def metadata(self) -> dict:
        return {"n_entities": self.n_entities, "n_relations": self.n_relations, "max_qualifiers": self.max_qualifiers}

    @classmethod
    def check_prerequisites(cls, root: Path) -> list[str]:
        return []

    # ---- conformance-kit examples
    @classmethod
    def example(cls, tmp_dir: Path) -> dict:
        folder = Path(tmp_dir) / "kg" / "tiny"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train.txt").write_text("a\tlikes\tb\tsince\tc\nb\tlikes\tc\nc\thates\ta\n", encoding="utf-8")
        (folder / "valid.txt").write_text("a\thates\tc\n", encoding="utf-8")
        (folder / "test.txt").write_text("b\thates\ta\tsince\tb\n", encoding="utf-8")
        return {"root": tmp_dir, "name": "tiny", "n_neighbors": 2}

    @classmethod
    def broken_example(cls, tmp_dir: Path) -> dict:
        kwargs = cls.example(tmp_dir)
        (Path(tmp_dir) / "kg" / "tiny" / "valid.txt").write_text("a\thates\tc\nb\tlikes\n", encoding="utf-8")
        return kwargs


__all__ = ["KGFacts", "generate_hyper_facts", "pykeen_folder", "read_fact_file", "entity_token", "relation_token",
           "vocab_size", "SPECIALS", "PAD", "MASK", "NO_RELATION", "NO_QUAL_KEY", "NO_QUAL_VALUE"]
