"""``--task node_language_modeling``: fairseq's language modelling task plus what only a task can do
for NODE models (NFE summed over workers, the kinetic/Jacobian regularisers in the loss,
``--node-failure-policy skip``), exactly as ``--task node_translation`` adds it to translation
(:class:`~node_seq.fairseq.task.NodeTaskMixin`). Data and every other option are ``--task
language_modeling``'s.
"""

from __future__ import annotations

from fairseq.tasks import register_task
from fairseq.tasks.language_modeling import LanguageModelingConfig, LanguageModelingTask

from .task import NodeTaskMixin


@register_task("node_language_modeling", dataclass=LanguageModelingConfig)
class NodeLanguageModelingTask(NodeTaskMixin, LanguageModelingTask):
    """Language modelling whose NFE, regularisers and solver failures are handled as in node_translation."""
