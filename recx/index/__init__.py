"""Item indexes: top-k search over item embeddings that returns external item ids.

:class:`ItemIndex` is the entry point. The rest of the package is split by
concept: :mod:`recx.index.kinds` (index kinds, their parameters and the
``auto`` choice), :mod:`recx.index.search` (exclusion and widening),
:mod:`recx.index.backends` and :mod:`recx.index.gpu` (CPU, FAISS GPU and
torch search), :mod:`recx.index.storage` (the on-disk layout) and
:mod:`recx.index.checks` (argument checks).
"""

from recx.index.checks import INDEX_METRICS
from recx.index.item_index import ItemIndex
from recx.index.kinds import AUTO_EXACT_MAX_ITEMS, INDEX_KINDS
from recx.index.storage import INDEX_FORMAT_VERSION

__all__ = ["AUTO_EXACT_MAX_ITEMS", "INDEX_FORMAT_VERSION", "INDEX_KINDS", "INDEX_METRICS", "ItemIndex"]
