"""fairseq registration of node-seq: ``--arch node_transformer`` and ``node_transformer_lm``, their sizes,
``--task node_translation`` and ``node_language_modeling``.

Importing this module (``--user-dir user_dir`` does it) registers the model once, whatever name
it is reached under, allow-lists what fairseq's checkpoints of it contain so they load under
torch's ``weights_only=True``, and mends fairseq-fixed's one NumPy 2 break its LM data hits
(:mod:`.numpy_compat`).
"""

from .checkpoints import allow_fairseq_checkpoints
from .numpy_compat import patch_fairseq_numpy

allow_fairseq_checkpoints()
patch_fairseq_numpy()

from . import model  # noqa: E402,F401  (registers the model and its architectures)
from . import task  # noqa: E402,F401  (registers node_translation)
from . import lm, lm_task  # noqa: E402,F401  (registers node_transformer_lm and node_language_modeling)
