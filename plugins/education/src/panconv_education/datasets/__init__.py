"""Data sets: ``education.KnowledgeTracing`` (``knowledge_tracing.py``), the 3-line benchmark format."""
