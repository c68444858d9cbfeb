"""Models: CAKT (``cakt.py``), DKT (``dkt.py``), DKVMN (``dkvmn.py``), SAKT (``sakt.py``); what they
share (the interaction encoding, the next-answer loss and predictions, the example batch) is in ``layers.py``."""
