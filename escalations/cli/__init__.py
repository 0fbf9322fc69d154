"""Command groups of the ``escalations`` CLI; each module exposes ``register(app)``."""
