"""Evaluators: ``graph.FullRanking`` (``ranking.py``), full-ranking Recall/NDCG/Precision/HitRate@K."""
