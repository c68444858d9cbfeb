"""Models: LightGCN (``lightgcn.py``), NGCF (``ngcf.py``), MF-BPR (``mf.py``); what they share
(embeddings, BPR loss, ``recommend``) is in ``layers.py``."""
