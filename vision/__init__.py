"""ODENet image classifiers on the node-seq ODE core: models, data, training and evaluation."""

from .data import DataError as DataError, load_dataset as load_dataset
from .models import (
    ODEBlock as ODEBlock,
    ODEClassifier as ODEClassifier,
    create_model as create_model,
    list_models as list_models,
    register_model as register_model,
    transfer_optimizer_state as transfer_optimizer_state,
)
