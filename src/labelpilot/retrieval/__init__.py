"""Similarity search (faiss indexes of text and image vectors, versioned in a registry) and FAQ matching.

``index``: :class:`~labelpilot.retrieval.index.VectorIndex` (exact below a size, HNSW above; string ids);
``service``: named indexes in ``<data dir>/indexes`` and turning texts/images into vectors; ``dups``: the
near-duplicate report; ``faq``: retrieval + classifier FAQ answers; ``cli``: ``labelpilot index`` / ``faq``.
The HTTP routes are in ``labelpilot.server.retrieval_api``. Needs the ``retrieval`` extra (faiss-cpu).
"""
