"""Data the project makes itself: the embedded numbers-to-words translation task."""
