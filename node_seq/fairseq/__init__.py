"""fairseq registration of node-seq: ``--arch node_transformer``, its sizes, ``--task node_translation``.

Importing this module (``--user-dir user_dir`` does it) registers the model once, whatever name
it is reached under, and allow-lists what fairseq's checkpoints of it contain so they load under
torch's ``weights_only=True``.
"""

from .checkpoints import allow_fairseq_checkpoints

allow_fairseq_checkpoints()

from . import model  # noqa: E402,F401  (registers the model and its architectures)
from . import task  # noqa: E402,F401  (registers node_translation)
