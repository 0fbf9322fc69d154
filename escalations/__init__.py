"""Everything the escalation backend adds beside the card's top-level names: client, settings, db, API, CLI, dev stack, packaged policies."""
