"""The text pipeline: the embedded numbers-to-words task, the shared BPE, data preparation, scoring."""
