"""Training as Lightning modules (one per task) and the runner that owns a run folder."""
