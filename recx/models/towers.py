"""User and item towers: TorchRec embedding tables pooled into an MLP.

Symbols used in shapes: ``B`` is the batch size, ``D`` the embedding
dimension of the tables, ``O`` the output dimension of a tower.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from recx.models.config import TwoTowerConfig

# Feature keys of the KeyedJaggedTensor inputs, in the order the towers read them.
USER_ID = "user_id"
USER_HISTORY = "user_history"
USER_RECENT = "user_recent"
ITEM_ID = "item_id"
ITEM_GENRES = "item_genres"
ITEM_TEXT = "item_text"

_ACTIVATION_MODULES: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


class MLP(nn.Sequential):
    """Stack of linear layers with an activation (and dropout) between them.

    Maps ``(B, input_dim)`` to ``(B, output_dim)``; the last layer is linear.
    """

    def __init__(self, input_dim: int, hidden_dims: list[int], output_dim: int, activation: str, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = []
        width = input_dim
        for hidden in hidden_dims:
            layers.append(nn.Linear(width, hidden))
            layers.append(_ACTIVATION_MODULES[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        layers.append(nn.Linear(width, output_dim))
        super().__init__(*layers)


def _table(name: str, rows: int, dim: int, features: list[str], pooling: PoolingType) -> EmbeddingBagConfig:
    # Rows start in U(-1/sqrt(rows), 1/sqrt(rows)), TorchRec's default, which
    # keeps large tables near zero so that the MLP dominates early training.
    return EmbeddingBagConfig(name=name, embedding_dim=dim, num_embeddings=rows, feature_names=features, pooling=pooling)


class _Tower(nn.Module):
    """Common part of both towers: an EmbeddingBagCollection, an MLP and L2 normalisation."""

    def __init__(self, config: TwoTowerConfig, tables: list[EmbeddingBagConfig], device: torch.device | None, dense_inputs: int = 0) -> None:
        super().__init__()
        self.feature_names: list[str] = [name for table in tables for name in table.feature_names]
        self.embeddings = EmbeddingBagCollection(tables=tables, device=device or torch.device("cpu"))
        width = config.embedding_dim * (len(self.feature_names) + dense_inputs)
        self.mlp = MLP(width, config.hidden_dims, config.output_dim, config.activation, config.dropout)
        if device is not None:
            self.mlp.to(device)

    def pooled(self, features: KeyedJaggedTensor) -> list[torch.Tensor]:
        """Return the pooled (B, D) embedding of each feature, in ``feature_names`` order."""
        missing = [name for name in self.feature_names if name not in features.keys()]
        if missing:
            raise KeyError(f"{type(self).__name__} expects features {self.feature_names}, the input lacks {missing}.")
        pooled = self.embeddings(features)
        return [pooled[name] for name in self.feature_names]

    def encode(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """Return unit-norm embeddings of shape (B, O), float32."""
        return F.normalize(self.mlp(torch.cat(self.pooled(features), dim=1)), dim=1)


class UserTower(_Tower):
    """Encode a user from their id and the bag of items they interacted with.

    Input: a KeyedJaggedTensor with keys ``user_id`` (one index per user, if
    ``config.use_user_id``) and ``user_history`` (item indices, any number per
    user, mean-pooled; an empty bag pools to zeros). Output: (B, O) float32
    embeddings of norm ``1 / temperature``, so that their inner product with
    unit-norm item embeddings equals the training logit.
    """

    def __init__(self, config: TwoTowerConfig, device: torch.device | None = None) -> None:
        tables = []
        if config.use_user_id:
            tables.append(_table("user_id", config.n_users, config.embedding_dim, [USER_ID], PoolingType.SUM))
        if config.use_history:
            tables.append(_table("user_history", config.n_items, config.embedding_dim, [USER_HISTORY], PoolingType.MEAN))
        if config.recent_items:
            tables.append(_table("user_recent", config.n_items, config.embedding_dim, [USER_RECENT], PoolingType.MEAN))
        super().__init__(config, tables, device)
        self.inverse_temperature = 1.0 / config.temperature

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        return self.encode(features) * self.inverse_temperature


class ItemTower(_Tower):
    """Encode an item from its id, its genres and a fixed text vector.

    Input: a KeyedJaggedTensor with keys ``item_id`` (one index per item, if
    ``config.use_item_id``; an empty bag pools to zeros, which is how an
    item without training interactions is read from its content alone) and
    ``item_genres`` (genre indices, mean-pooled, if ``config.n_genres > 0``).
    With ``config.text_dim > 0`` the tower also reads row ``item`` of the
    ``text_vectors`` buffer, shape (n_items, text_dim) float32, through the
    linear map ``text_projection``; the item index comes from the
    ``item_text`` key (one index per item). Output: (B, O) float32 unit-norm
    embeddings.
    """

    def __init__(self, config: TwoTowerConfig, device: torch.device | None = None) -> None:
        tables = []
        if config.use_item_id:
            tables.append(_table("item_id", config.n_items, config.embedding_dim, [ITEM_ID], PoolingType.SUM))
        if config.n_genres > 0:
            tables.append(_table("item_genres", config.n_genres, config.embedding_dim, [ITEM_GENRES], PoolingType.MEAN))
        super().__init__(config, tables, device, dense_inputs=1 if config.text_dim else 0)
        self.text_projection: nn.Linear | None = None
        if config.text_dim:
            self.register_buffer("text_vectors", torch.zeros(config.n_items, config.text_dim, device=device))
            self.text_projection = nn.Linear(config.text_dim, config.embedding_dim, device=device)
            if config.use_item_id:
                # 1 for items whose id row was trained, 0 for items never seen in
                # training: those are read from their content alone, because an
                # untrained id row only adds noise.
                self.register_buffer("id_weight", torch.ones(config.n_items, device=device))
        self.id_dropout = config.id_dropout

    def forward(self, features: KeyedJaggedTensor, *, content_only: bool = False) -> torch.Tensor:
        """Embed items; ``content_only`` leaves out every id embedding (text model only)."""
        if self.text_projection is None:
            return self.encode(features)
        inputs = self.pooled(features)
        items = features[ITEM_TEXT].values()
        if ITEM_ID in self.feature_names:
            position = self.feature_names.index(ITEM_ID)
            keep = torch.zeros_like(self.id_weight[items]) if content_only else self.id_weight[items]
            if self.training and self.id_dropout > 0:
                keep = keep * (torch.rand(len(items), device=keep.device) >= self.id_dropout)
            inputs[position] = inputs[position] * keep.unsqueeze(1)
        inputs.append(self.text_projection(self.text_vectors[items]))
        return F.normalize(self.mlp(torch.cat(inputs, dim=1)), dim=1)
