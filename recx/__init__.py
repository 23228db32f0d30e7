"""recx: two-tower retrieval on implicit feedback.

The package is organised one concept a module:

- :mod:`recx.data`: id maps, the :class:`~recx.data.Interactions` container,
  dataset readers and split protocols.
- :mod:`recx.models`: user and item towers over TorchRec embedding tables.
- :mod:`recx.losses`: sampled softmax with logQ correction, BPR, BCE.
- :mod:`recx.training`: the training loop, checkpoints and early stopping.
- :mod:`recx.index`: FAISS item indexes that return external ids.
- :mod:`recx.evaluation`: full-ranking metrics and the evaluation protocol.
- :mod:`recx.baselines`: non-neural baselines under the same contract.
"""

import logging

__version__ = "0.1.0"

# Library code logs through "recx.*" loggers and never configures handlers:
# the application (or the `recx` command line) decides where messages go.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
