"""overton's engine: models, prompts, generation, metrics and sessions.

Importing this package is cheap: torch, transformers and sentence-transformers are imported
only by the modules that run models (``engine.models``, ``engine.generation``,
``engine.embeddings``), so headless commands stay fast. The engine never imports textual.
"""

__version__ = "0.1.0"
