"""What the knowledge-tracing models share.

The task (all four papers): a student's answers ``(q_1, r_1), ..., (q_T, r_T)`` (skill ids 1-based,
responses 0/1); at every step ``t < T`` predict ``r_{t+1}`` from the interactions up to ``t`` and the
next skill ``q_{t+1}``. A batch (``education.KnowledgeTracing.collate``) holds ``skills``,
``responses`` (``B, T``, right-padded with 0) and ``mask`` (``True`` on real answers); a model's
``forward`` returns the logits of the ``T - 1`` next answers (``B, T - 1``), its loss is the binary
cross-entropy over the real ones, its ``predict`` returns ``{"probs", "targets", "mask"}`` (``B, T - 1``)
that ``education.KTMetrics`` reads.

The interaction encoding of DKT / DKVMN / SAKT / CAKT: ``x_t = q_t + num_skills * r_t`` in
``1 .. 2 * num_skills`` (0 is padding), the index of the one-hot vector of DKT (Piech et al., Sec. 3.1).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from panconv.api import Model


def interaction_tokens(skills: torch.Tensor, responses: torch.Tensor, num_skills: int) -> torch.Tensor:
    """``q + num_skills * r`` (1 .. 2 num_skills), 0 where ``skills`` is 0 (padding)."""
    return torch.where(skills > 0, skills + num_skills * responses, torch.zeros_like(skills))


def gather_next(per_skill: torch.Tensor, skills: torch.Tensor) -> torch.Tensor:
    """``per_skill[:, t, q_{t+1} - 1]`` for ``t < T - 1``: the output for the next skill (``B, T - 1``).

    ``per_skill``: ``(B, T, num_skills)`` (or ``(B, T - 1, num_skills)``); padding (skill 0) reads skill 1."""
    nxt = (skills[:, 1:] - 1).clamp(min=0).unsqueeze(-1)
    return per_skill[:, : nxt.shape[1]].gather(-1, nxt).squeeze(-1)


class KnowledgeTracingModel(Model):
    """Base of the knowledge-tracing models: next-answer BCE loss, predictions, the example batch.

    Subclasses implement ``forward(batch) -> logits (B, T - 1)``."""

    metadata_inputs = ("num_skills",)

    def loss(self, outputs: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        """Binary cross-entropy over every real next answer (the papers' objective)."""
        mask = batch["mask"][:, 1:]
        targets = batch["responses"][:, 1:].to(outputs.dtype)
        if not mask.any():
            return {"loss": outputs.sum() * 0.0}
        return {"loss": F.binary_cross_entropy_with_logits(outputs[mask], targets[mask])}

    def predict(self, outputs: torch.Tensor, batch: dict | None = None) -> dict[str, Any]:
        """``probs`` (sigmoid of the logits), ``targets`` (the next answers) and ``mask``, each ``(B, T - 1)``."""
        probs = torch.sigmoid(outputs.float())
        if batch is None:
            return {"probs": probs}
        return {"probs": probs, "targets": batch["responses"][:, 1:], "mask": batch["mask"][:, 1:]}

    @classmethod
    def example_config(cls) -> dict:
        return {"num_skills": 7}

    def example_inputs(self, batch_size: int = 2) -> dict:
        """A random batch of ``batch_size`` sequences of up to 9 answers (the last one shorter: padding)."""
        return example_batch(self.num_skills, batch_size, length=9)


def example_batch(num_skills: int, batch_size: int = 2, length: int = 9, seed: int = 0) -> dict:
    """Random ``skills``/``responses``/``mask``; with several sequences the last is 3 answers shorter."""
    g = torch.Generator().manual_seed(seed)
    skills = torch.randint(1, num_skills + 1, (batch_size, length), generator=g)
    responses = torch.randint(0, 2, (batch_size, length), generator=g)
    mask = torch.ones(batch_size, length, dtype=torch.bool)
    if batch_size > 1:
        mask[-1, length - 3:] = False
    skills, responses = skills * mask, responses * mask
    return {"skills": skills, "responses": responses, "mask": mask}
