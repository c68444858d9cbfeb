"""Regenerate ``fixtures/hyenadna_parity.pt``: the official HyenaDNA's outputs on our (deterministic) weights.

Not a test (pytest does not collect it). Needs the official standalone file, fetched, never committed::

    git -C <HazyResearch/hyena-dna checkout> show HEAD:standalone_hyenadna.py > /tmp/hdna/standalone_hyenadna.py
    pip install --target /tmp/hdna/deps einops
    # the file imports transformers for its tokenizer only: a two-class stub is enough
    mkdir -p /tmp/hdna/deps/transformers && touch /tmp/hdna/deps/transformers/__init__.py
    printf 'class AddedToken:\n    pass\nclass PreTrainedTokenizer:\n    pass\n' \
        > /tmp/hdna/deps/transformers/tokenization_utils.py
    PANCONV_RECORD_HYENADNA=1 PYTHONPATH=/tmp/hdna/deps:/tmp/hdna \
        python plugins/genomics/tests/make_hyenadna_fixture.py

It builds our :class:`HyenaDNA` at a small configuration, fills its weights with
:func:`panconv_genomics.testing.fill_deterministic` (no random generator: the test rebuilds the same
weights), copies them into the official ``HyenaDNAModel`` (``to_official`` below: the inverse of
:func:`panconv_genomics.models.hyenadna.official_to_panconv`), and stores the official hidden states and
tied-head logits for fixed token ids: a few KB, no weights.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

FIXTURE = Path(__file__).parent / "fixtures" / "hyenadna_parity.pt"
#: the upstream commit the fixture was recorded from
SOURCE = {"HazyResearch/hyena-dna": "d553021b483b82980aa4b868b37ec2d4332e198a"}
#: the small configuration recorded (the published filter settings, a narrow width); shift: see CASES
CONFIG = dict(d_model=16, n_layer=2, d_inner=64, l_max=66, filter_order=16, emb_dim=5, w=10.0)
#: modulation shift per case: 0 (the training code's default) and 0.05 (the standalone file's default)
CASES = {"shift0": 0.0, "shift005": 0.05}
LENGTH = 48


def ours(shift: float):
    from panconv_genomics.models.hyenadna import HyenaDNA
    from panconv_genomics.testing import fill_deterministic

    model = HyenaDNA(**CONFIG, modulation_shift=shift, embed_dropout=0.0)
    return fill_deterministic(model).eval()


def token_ids() -> torch.Tensor:
    """Fixed ids (nucleotides 7..11 and a few specials), no generator."""
    i = torch.arange(2 * LENGTH)
    return ((i * 7 + (i // 5) * 3) % 12).view(2, LENGTH)


def to_official(model) -> dict:
    """Our backbone's state dict under the official ``HyenaDNAModel`` names."""
    from panconv_genomics.models.hyenadna import _OFFICIAL_FILTER

    inverse = {v: k for k, v in _OFFICIAL_FILTER.items()}
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("embedding."):
            out["backbone.embeddings.word_embeddings." + key.split(".", 1)[1]] = value
        elif key.startswith("norm."):
            out["backbone.ln_f." + key.split(".", 1)[1]] = value
        else:
            _, index, rest = key.split(".", 2)
            if rest.startswith("mixer.filter_fn."):
                sub = rest[len("mixer.filter_fn."):]
                new = next(k for k in inverse if sub.startswith(k))
                sub = inverse[new] + sub[len(new):]
                if sub == "implicit_filter.1.freq":  # the shared Sin appears after each hidden Linear
                    for j in (1, 3, 5):
                        out[f"backbone.layers.{index}.mixer.filter_fn.implicit_filter.{j}.freq"] = value
                    continue
                rest = "mixer.filter_fn." + sub
            out[f"backbone.layers.{index}.{rest}"] = value
    return out


def record() -> None:
    import standalone_hyenadna as official

    ids = token_ids()
    record = {"source": SOURCE, "config": CONFIG, "ids": ids, "cases": {}}
    for name, shift in CASES.items():
        model = ours(shift)
        layer = dict(emb_dim=CONFIG["emb_dim"], filter_order=CONFIG["filter_order"], short_filter_order=3,
                     l_max=CONFIG["l_max"], modulate=True, w=CONFIG["w"], lr=6e-4, wd=0.0, lr_pos_emb=0.0,
                     shift=shift)
        ref = official.HyenaDNAModel(d_model=CONFIG["d_model"], n_layer=CONFIG["n_layer"], d_inner=CONFIG["d_inner"],
                                     vocab_size=12, pad_vocab_size_multiple=8, embed_dropout=0.0, layer=layer).eval()
        state = to_official(model)
        missing, unexpected = ref.load_state_dict(state, strict=False)
        leftover = [k for k in missing if not k.endswith(("pos_emb.z", "pos_emb.t"))]
        assert not leftover and not unexpected, (leftover, unexpected)
        with torch.no_grad():
            hidden = ref(ids)                                                     # (N, L, d)
            logits = hidden @ ref.backbone.embeddings.word_embeddings.weight.t()  # the tied LM head
        record["cases"][name] = {"logits": logits.clone()}
        if name == "shift0":
            record["cases"][name]["hidden"] = hidden.clone()
        print(f"{name}: hidden {tuple(hidden.shape)}, logits {tuple(logits.shape)}")
    torch.save(record, FIXTURE)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    if os.environ.get("PANCONV_RECORD_HYENADNA") != "1":
        sys.exit("set PANCONV_RECORD_HYENADNA=1 (and PYTHONPATH to the official standalone_hyenadna.py) to record")
    record()
