"""The learner: SAC-AE networks, losses and the update that turns pixel batches into parameters."""
