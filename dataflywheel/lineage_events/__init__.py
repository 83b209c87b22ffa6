"""OpenLineage run events for the stages of a round: names, facts, facets, events, emitter.

Runs in: the flow process (built and sent there; the modules themselves are pure except
``emitter``). Off unless ``FLYWHEEL_OPENLINEAGE_URL`` is set; see docs/openlineage.md.
Importing this package imports nothing from ``openlineage``: ``facts`` and ``names`` are
plain, and the modules that need the client (``facets``, ``events``, ``emitter``) are
imported only where events are sent.
"""
