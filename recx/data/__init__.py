"""Interaction data: id maps, the Interactions container, readers, datasets and split protocols."""

from recx.data.datasets import DATASETS, embedded_dataset_path, load_dataset
from recx.data.idmap import IdMap
from recx.data.interactions import Interactions
from recx.data.movielens import load_movielens
from recx.data.readers import read_csv, read_interactions, read_parquet
from recx.data.sampling import drop_items, keep_items, sample_per_user
from recx.data.sequences import read_sequences
from recx.data.splits import Split, leave_one_out, random_split, split_interactions, temporal_split, time_cut_split

__all__ = [
    "DATASETS",
    "IdMap",
    "Interactions",
    "Split",
    "drop_items",
    "embedded_dataset_path",
    "keep_items",
    "leave_one_out",
    "load_dataset",
    "load_movielens",
    "random_split",
    "read_csv",
    "read_interactions",
    "read_parquet",
    "read_sequences",
    "sample_per_user",
    "split_interactions",
    "temporal_split",
    "time_cut_split",
]
