"""Item indexes: top-k search over item embeddings that returns external item ids."""

from recx.index.item_index import INDEX_FORMAT_VERSION, INDEX_KINDS, INDEX_METRICS, ItemIndex

__all__ = ["INDEX_FORMAT_VERSION", "INDEX_KINDS", "INDEX_METRICS", "ItemIndex"]
