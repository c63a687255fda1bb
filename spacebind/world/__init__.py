"""The procedural world: concepts, rendering, dataset generation."""
