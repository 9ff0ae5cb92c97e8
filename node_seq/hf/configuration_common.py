"""What the HF configs of the seq2seq model and the LM share: the NODE fields, generated from the
option schema, and the checks of sizes, rates, widths and special token ids.

Each config says which of its fields are sizes, which sides have layers and which fields are token
ids; :meth:`NodeConfigBase.check` does the rest, so both refuse a bad value with the same words.
"""

from __future__ import annotations

import copy
import difflib

from transformers import PreTrainedConfig

from ..nn.fields import ACTIVATIONS
from ..nn.options import OPTIONS, NodeOptions, hf_annotation, options_of
from ..ode import OptionError, SolverConfig, parse_time_points
from .remote_code import SavesCodeBundle


def fail(field: str, message: str) -> None:
    raise OptionError(f"{field}: {message}")


class NodeConfigBase(SavesCodeBundle, PreTrainedConfig):
    """The methods of a config with NODE fields; :func:`node_option_fields` adds the fields."""

    # Class attributes, not annotated: an annotation would make them config fields.
    _front_end = ""  # the schema's front end whose NODE options are this config's fields
    _size_fields = ()  # integers >= 1
    _sides = ()  # "encoder"/"decoder": each has {side}_embed_dim and {side}_attention_heads
    _token_id_fields = ("bos_token_id", "pad_token_id", "eos_token_id", "unk_token_id")
    # The validated NodeOptions and the field values they were read from, kept outside ``__dict__``
    # (which transformers serialises, compares and copies into config.json) in a slot of their own.
    __slots__ = ("_node_options_read",)

    def __post_init__(self, **kwargs):
        self._refuse_unknown_node_keys(kwargs)
        self.node_ts = list(parse_time_points(self.node_ts, "node_ts"))
        if self.use_cache is None:  # an adaptive decoder given a cache re-solves its prefix: exact, no cheaper
            self.use_cache = not self.node_decoder or self.node_options().solver().is_fixed_grid
        super().__post_init__(**kwargs)
        self.check()

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """``PreTrainedConfig.from_dict``, whose keyword overrides (``from_pretrained(path, node_method=...)``)
        would drop a misspelt ``node_*`` key silently: refused as in ``__init__``."""
        cls._refuse_unknown_node_keys(kwargs)
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def _refuse_unknown_node_keys(cls, names) -> None:
        """A ``node_*`` key that is not a field would be kept as an attribute nothing reads (a misspelt
        ``node_methd="euler"`` would leave the model on dopri5): refuse it, naming the nearest field."""
        fields = sorted(name for name in cls.__dataclass_fields__ if name.startswith("node_"))
        unknown = sorted(name for name in names if name.startswith("node_") and name not in fields)
        if not unknown:
            return
        name = unknown[0]
        nearest = difflib.get_close_matches(name, fields, n=1)
        # An option of another front end (node_encoder in an LM, fairseq's node_failure_policy) is no typo.
        hint = f"did you mean {nearest[0]}? " if nearest and name.removeprefix("node_") not in OPTIONS else ""
        fail(name, f"not an option of {cls.model_type}; {hint}its NODE fields are {', '.join(fields)}")

    def save_pretrained(self, *args, **kwargs):
        """Refuse to write a config that would not load back (a field may have changed since ``__init__``)."""
        self.check()
        return super().save_pretrained(*args, **kwargs)

    def node_options(self) -> NodeOptions:
        """The NODE options of this config, checked (errors name this config's fields): built once, and
        again only after a ``node_*`` field has changed (by assignment or in place), so an edit is
        validated when the options are next read (by :meth:`check` as a model is built)."""
        values = self._node_values()
        read = getattr(self, "_node_options_read", None)
        if read is None or read[0] != values:
            read = values, NodeOptions.from_front_end(self, self._front_end)
            self._node_options_read = read
        return read[1]

    def _node_values(self) -> tuple:
        """The values the NODE options are read from (copies: ``node_ts`` is a list one can edit in place)."""
        return tuple(copy.deepcopy(getattr(self, option.spelled(self._front_end, attribute=True), option.default))
                     for option in options_of(self._front_end))

    def solver_config(self) -> SolverConfig:
        """The solver of every ODE block, validated; a fixed grid's size is whole ``node_steps``."""
        return self.node_options().solver()

    def check(self) -> None:
        """Raise :class:`~node_seq.ode.OptionError` for the first invalid field (or a ``node_*``
        attribute set after construction that is no field)."""
        self._refuse_unknown_node_keys(vars(self))
        options = self.node_options()
        for field in self._size_fields:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(field, f"must be an integer >= 1, got {value!r}")
        for field in ("dropout", "attention_dropout", "activation_dropout"):
            value = getattr(self, field)
            if not 0.0 <= value < 1.0:
                fail(field, f"must be a probability in [0, 1), got {value!r}")
        if self.activation_function not in ACTIVATIONS:
            fail("activation_function", f"unknown activation {self.activation_function!r}; "
                 f"choose one of {', '.join(ACTIVATIONS)}")
        for side in self._sides:
            dim, heads = getattr(self, f"{side}_embed_dim"), getattr(self, f"{side}_attention_heads")
            options.check_width(side, dim, heads, f"{side}_attention_heads", self._front_end)
            if dim % heads and not (options.augment_dims and getattr(options, side)):
                fail(f"{side}_attention_heads", f"must divide {side}_embed_dim {dim}, got {heads}")
        self._check_vocabularies()
        size_field, size = self._token_id_bound()
        for field in self._token_id_fields:
            value = getattr(self, field)
            if value is not None and not 0 <= value < size:
                fail(field, f"must be a token id in [0, {size_field}={size}), got {value!r}")
        if self.pad_token_id is None:
            fail("pad_token_id", "is required (padding positions are masked and excluded from positions)")

    def _check_vocabularies(self) -> None:
        """Checks between vocabulary fields, run before the token ids'."""

    def _token_id_bound(self) -> tuple[str, int]:
        """The field that bounds every special token id, and its value."""
        return "vocab_size", self.vocab_size


def node_option_fields(front_end: str, name: str) -> type:
    """A config base class with one field per NODE option of ``front_end`` (``node_method``, ...),
    generated from :class:`~node_seq.nn.options.NodeOptions`, the options' one description."""
    options = list(options_of(front_end))
    namespace = {option.spelled(front_end): option.default for option in options}
    namespace["__annotations__"] = {option.spelled(front_end): hf_annotation(option) for option in options}
    namespace["__module__"] = __name__
    namespace["__doc__"] = node_option_fields.__doc__
    namespace["_front_end"] = front_end
    return type(name, (NodeConfigBase,), namespace)
