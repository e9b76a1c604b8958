"""The generation engine: torch and transformers only, nothing of Django.

Import from the submodules (``inference.engine.scheduler``, ``.registry``, ``.types``...):
``inference.engine.tokenization`` alone must stay importable without torch, for web processes.
"""
