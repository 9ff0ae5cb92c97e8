"""``--user-dir user_dir``: fairseq imports this folder, which registers node-seq's model."""

import node_seq.fairseq  # noqa: F401
