"""The HF command lines: train with ``Seq2SeqTrainer`` (``train``), convert a fairseq checkpoint
(``convert``), translate with a saved folder (``translate``); each runs as ``python -m
node_seq.hf.cli.<name>`` or as its console script (setup.py)."""
