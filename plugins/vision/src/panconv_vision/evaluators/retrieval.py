"""Cross-modal retrieval metrics in both directions: R@1/5/10 and median rank (text -> video, video -> text).

The model's ``predict`` gives, for each batch item ``i``, a video (or image) embedding and the
embedding of its caption: ``{"video_embeddings": (B, E), "text_embeddings": (B, E)}``. After the
whole split is processed, every text queries every video of the split (and the other way round)
by cosine similarity (``normalize=True``, the default) or the plain dot product.

Correct answers: the item's own partner. When the batch carries the caption tokens
(``batch["captions"]``, the key is ``group_key``) items with identical captions count as the same
text — generated captions repeat ("the digit three moves left" describes many clips), and a
video retrieved by another copy of its own caption is a correct hit. The rank of a query is
``1 +`` the number of *wrong* candidates scoring at least as high as its best correct one (ties
count against the model, so a constant embedding scores R@1 = 0, not 1). ``R@K`` is the percentage
of queries with rank <= K (the convention of the video-retrieval papers, e.g. Frozen in Time's
tables), ``medr`` the median rank (for an even count the mean of the two middle ranks, as
``numpy.median``), ``meanr`` the mean rank; ``rsum`` adds the six recalls.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from panconv.api import Evaluator

__all__ = ["CaptionAccuracy", "Retrieval", "retrieval_ranks", "retrieval_metrics"]


def retrieval_ranks(similarity: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Rank of each query (row): ``1 +`` #wrong candidates scoring >= the best correct one.

    ``similarity`` ``(Q, K)``; ``positives`` ``(Q, K)`` bool, at least one True per row.
    """
    if similarity.shape != positives.shape or similarity.dim() != 2:
        raise ValueError(f"retrieval_ranks: similarity {tuple(similarity.shape)} and positives "
                         f"{tuple(positives.shape)} must be the same (Q, K) shape")
    if not bool(positives.any(1).all()):
        raise ValueError("retrieval_ranks: every query needs at least one correct candidate")
    best = similarity.masked_fill(~positives, float("-inf")).max(1, keepdim=True).values
    return 1 + ((similarity >= best) & ~positives).sum(1)


def retrieval_metrics(ranks: torch.Tensor, prefix: str) -> dict[str, float]:
    ranks = ranks.double()
    out = {f"{prefix}_r{k}": 100.0 * float((ranks <= k).double().mean()) for k in (1, 5, 10)}
    out[f"{prefix}_medr"] = float(ranks.median()) if ranks.numel() % 2 else float(ranks.sort().values[
        ranks.numel() // 2 - 1: ranks.numel() // 2 + 1].mean())
    out[f"{prefix}_meanr"] = float(ranks.mean())
    return out


class Retrieval(Evaluator):
    """Text <-> video retrieval over the whole split (see the module docstring).

    Args:
        normalize: cosine similarity (L2-normalised embeddings) rather than the dot product.
        group_key: batch key whose per-item value identifies identical captions (``None``: only the
            item's own partner is correct).
        video_key / text_key: the keys of the two embeddings in the model's ``predict`` output.
    """

    lower_is_better = ("medr", "meanr")

    def __init__(self, normalize: bool = True, group_key: str | None = "captions",
                 video_key: str = "video_embeddings", text_key: str = "text_embeddings"):
        super().__init__()
        self.normalize, self.group_key = bool(normalize), group_key
        self.video_key, self.text_key = video_key, text_key

    def process(self, batch: dict, outputs: Any) -> None:
        if not isinstance(outputs, dict) or self.video_key not in outputs or self.text_key not in outputs:
            raise ValueError(f"Retrieval: predict must return a dict with '{self.video_key}' and '{self.text_key}'")
        video, text = outputs[self.video_key].detach().float().cpu(), outputs[self.text_key].detach().float().cpu()
        if video.dim() != 2 or video.shape != text.shape:
            raise ValueError(f"Retrieval: video and text embeddings must both be (B, E), got {tuple(video.shape)} "
                             f"and {tuple(text.shape)}")
        groups = batch.get(self.group_key) if self.group_key is not None else None
        keys = ([tuple(g.reshape(-1).tolist()) if isinstance(g, torch.Tensor) else g for g in groups]
                if groups is not None else [None] * len(video))
        self.results.extend(zip(video, text, keys))

    def compute_metrics(self, results: list) -> dict[str, float]:
        if not results:
            return {}
        video = torch.stack([r[0] for r in results])
        text = torch.stack([r[1] for r in results])
        if self.normalize:
            video, text = F.normalize(video, dim=1), F.normalize(text, dim=1)
        sim = text @ video.T                                   # (texts, videos)
        n = len(results)
        keys = [r[2] for r in results]
        if all(k is not None for k in keys):
            ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
            group = torch.tensor([ids[k] for k in keys])
            positives = group[:, None] == group[None, :]
        else:
            positives = torch.eye(n, dtype=torch.bool)
        metrics = retrieval_metrics(retrieval_ranks(sim, positives), "t2v")
        metrics.update(retrieval_metrics(retrieval_ranks(sim.T, positives.T), "v2t"))
        metrics["rsum"] = sum(metrics[f"{d}_r{k}"] for d in ("t2v", "v2t") for k in (1, 5, 10))
        return metrics

    @classmethod
    def example(cls):
        # 3 pairs: text 0 finds video 0 first; text 1 ranks video 1 second; text 2 ranks video 2 third
        video = torch.eye(3)
        text = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.5, 0.0], [0.8, 0.6, 0.1]])
        batches = [({}, {"video_embeddings": video[:2], "text_embeddings": text[:2]}),
                   ({}, {"video_embeddings": video[2:], "text_embeddings": text[2:]})]
        return {"group_key": None}, batches, {"t2v_r1": 100 / 3, "t2v_medr": 2.0, "t2v_r5": 100.0}


class CaptionAccuracy(Evaluator):
    """Generated captions against the reference ones (token ids; 0 = ``<pad>``, 1 = ``<bos>``, 2 = ``<eos>``).

    ``caption_exact``: fraction of captions equal to the reference up to and including ``<eos>``;
    ``token_accuracy``: fraction of the reference's tokens after ``<bos>`` (through ``<eos>``) predicted
    at their position. ``outputs`` are the model's decoded ids ``(N, S)``, ``batch[key]`` the references.
    """

    def __init__(self, key: str = "captions"):
        super().__init__()
        self.key = key

    @staticmethod
    def _until_eos(ids: list[int]) -> list[int]:
        ids = [i for i in ids if i != 1]
        return ids[:ids.index(2) + 1] if 2 in ids else [i for i in ids if i != 0]

    def process(self, batch: dict, outputs: Any) -> None:
        pred, ref = outputs.detach().cpu().tolist(), batch[self.key].detach().cpu().tolist()
        if len(pred) != len(ref):
            raise ValueError(f"CaptionAccuracy: {len(pred)} generated captions for {len(ref)} references")
        for p, r in zip(pred, ref):
            p, r = self._until_eos(p), self._until_eos(r)
            hits = sum(1 for i, tok in enumerate(r) if i < len(p) and p[i] == tok)
            self.results.append((p == r, hits, len(r)))

    def compute_metrics(self, results: list) -> dict[str, float]:
        if not results:
            return {}
        return {"caption_exact": sum(r[0] for r in results) / len(results),
                "token_accuracy": sum(r[1] for r in results) / max(1, sum(r[2] for r in results))}

    @classmethod
    def example(cls):
        ref = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 8, 9, 2]])
        pred = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 4, 9, 3]])   # second: 2 of 4 tokens right (7, 9)
        batches = [({"captions": ref[:1]}, pred[:1]), ({"captions": ref[1:]}, pred[1:])]
        return {}, batches, {"caption_exact": 0.5, "token_accuracy": (3 + 2) / 7}
