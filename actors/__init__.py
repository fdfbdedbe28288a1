"""Actors: the CarRacing env pipeline, the rollout collector and its thin Ray wrapper."""
