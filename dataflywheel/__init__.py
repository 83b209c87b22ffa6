"""dataflywheel: self-improvement rounds for language models with every artifact kept.

Runs in: anywhere. The core package holds no Prefect flow and no Ray actor; see
``flows/``, ``tasks/`` and ``workers/`` for those.
"""

__version__ = "0.1.0"
