"""panconv-graph: graph collaborative filtering for panconv.

LightGCN (He et al., SIGIR 2020), NGCF (Wang et al., SIGIR 2019) and MF-BPR (Rendle et al., 2009)
on implicit-feedback data (``graph.RecSysData``) with the full-ranking protocol of the LightGCN
reference code (``graph.FullRanking``). Importing this package does not import torch.
"""

__version__ = "0.1.0"
