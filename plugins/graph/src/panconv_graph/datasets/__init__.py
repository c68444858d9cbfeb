"""Data sets: ``graph.RecSysData`` (``recsys.py``), implicit feedback in the LightGCN/NGCF release format."""
