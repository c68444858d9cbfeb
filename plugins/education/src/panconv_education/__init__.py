"""panconv-education: knowledge tracing for panconv.

CAKT (Yang et al., "Deep Knowledge Tracing with Learning Curves", ICDMW 2020) with the baselines
its paper compares with, DKT (Piech et al., NeurIPS 2015), DKVMN (Zhang et al., WWW 2017) and
SAKT (Pandey & Karypis, EDM 2019); the 3-line benchmark data (``education.KnowledgeTracing``) and
exact AUC / accuracy over every predicted next answer (``education.KTMetrics``). Importing this
package does not import torch.
"""

__version__ = "0.1.0"
