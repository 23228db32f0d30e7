"""Transfer: start the towers from a pretrained network, then fine-tune them.

Sources: a sentence encoder over item text (:class:`TextInit`), a recx model
trained on another dataset (:class:`RunInit`), any table of item vectors
(:class:`VectorInit`). Policies: :class:`FineTuning` (freeze and unfreeze,
per-group learning rates, L2 toward the pretrained weights).
"""

from recx.transfer.alignment import Alignment, align, title_key
from recx.transfer.initialize import ITEM_TABLES, InitReport, Initializer, RunInit, TextInit, VectorInit, resolve_source
from recx.transfer.policy import GROUPS, PRETRAINED, FineTuning, parameter_group
from recx.transfer.text import DEFAULT_ENCODER, TextEncoder, default_encoder_path, encode_items, item_texts
from recx.transfer.vectors import ItemVectors, load_vectors

__all__ = [
    "DEFAULT_ENCODER",
    "GROUPS",
    "ITEM_TABLES",
    "PRETRAINED",
    "Alignment",
    "FineTuning",
    "InitReport",
    "Initializer",
    "ItemVectors",
    "RunInit",
    "TextEncoder",
    "TextInit",
    "VectorInit",
    "align",
    "default_encoder_path",
    "encode_items",
    "item_texts",
    "load_vectors",
    "parameter_group",
    "resolve_source",
    "title_key",
]
