"""Train, evaluate, save and reload a two-tower model through the recx Python API.

The script uses the MovieLens latest-small copy that ships with recx, so it
needs no download:

    .venv/bin/python examples/quickstart.py
    .venv/bin/python examples/quickstart.py --epochs 10 --output runs/example

It splits each user's ratings by time, trains for a few epochs, and scores
the model and the MostPopular baseline with full-ranking metrics. Then it
prints one user's recommendations with movie titles, saves the model, loads
it back and checks that the loaded copy recommends the same items.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recx.baselines import MostPopular
from recx.data import load_dataset, split_interactions
from recx.data.interactions import merge_interactions
from recx.evaluation import evaluate, format_metrics_table
from recx.training import TrainConfig, TwoTowerRecommender

#: MovieLens user whose recommendations are printed.
EXAMPLE_USER_ID = 1


@dataclass
class QuickstartResult:
    """Values the example computes, returned so that a test can check them."""

    metrics: dict[str, dict[str, float]]
    user_id: Any
    seen_item_ids: np.ndarray
    item_ids: np.ndarray
    scores: np.ndarray
    titles: list[str]
    reloaded_item_ids: np.ndarray
    reloaded_scores: np.ndarray
    saved_folder: Path


def main(epochs: int = 3, output_dir: str | Path | None = None, user_id: Any = EXAMPLE_USER_ID, k: int = 10) -> QuickstartResult:
    """Run the example and return what it computed.

    Parameters
    ----------
    epochs : int, default=3
        Training epochs. Early stopping on validation NDCG@20 may stop sooner.
    output_dir : str, pathlib.Path or None, default=None
        Folder to save the model into. None uses a temporary folder that is
        deleted before the function returns (``saved_folder`` then no longer
        exists).
    user_id : int, default=1
        External id of the user whose recommendations are printed.
    k : int, default=10
        Number of recommendations to print.
    """
    # Step 1: load the embedded data and hold out the latest 20% of each
    # user's ratings for test and 10% of the rest for validation.
    interactions = load_dataset("movielens-latest-small")
    split = split_interactions(interactions, "temporal", test_fraction=0.2, validation_fraction=0.1)
    print(f"{interactions}: train {split.train.nnz}, validation {split.validation.nnz}, test {split.test.nnz} interactions")

    # Step 2: train the default model (the one `recx train` uses) for a few
    # epochs, keeping the weights of the epoch with the best validation NDCG@20.
    model = TwoTowerRecommender(training=TrainConfig(epochs=epochs, show_progress=False))
    model.fit(split.train, validation=split.validation)

    # Step 3: score the model and MostPopular on the test part. Both exclude
    # each user's train and validation items, which are known at serving time.
    history = merge_interactions(split.train, split.validation)
    popular = MostPopular().fit(history)
    metrics = {
        "two_tower": evaluate(model, history, split.test, k=[10, 20]),
        "most_popular": evaluate(popular, history, split.test, k=[10, 20]),
    }
    print(format_metrics_table(metrics))

    # Step 4: recommend for one user. Ids come back as the dataset's own
    # movie ids, and the metadata gives their titles.
    item_ids, scores = model.recommend(user_id, k=k)
    all_titles = history.item_titles()
    titles = [str(all_titles[index]) for index in history.items.to_index(item_ids)]
    print(f"\nTop {k} movies for user {user_id}:")
    for rank, (item_id, score, title) in enumerate(zip(item_ids, scores, titles), start=1):
        print(f"{rank:>3}  {item_id:>7}  {score:7.3f}  {title}")

    # The user's train and validation movies, which recommend() left out.
    user_index = int(history.users.to_index([user_id])[0])
    seen_item_ids = history.items.to_id(history.user_items(user_index))

    # Step 5: save, load back and check that the loaded model agrees.
    with tempfile.TemporaryDirectory(prefix="recx-quickstart-") as temporary:
        folder = Path(output_dir) if output_dir is not None else Path(temporary) / "model"
        model.save(folder)
        reloaded = TwoTowerRecommender.load(folder)
        reloaded_item_ids, reloaded_scores = reloaded.recommend(user_id, k=k)
    if not np.array_equal(reloaded_item_ids, item_ids):
        raise RuntimeError(f"the reloaded model recommends {reloaded_item_ids.tolist()}, the trained one {item_ids.tolist()}.")
    where = folder if output_dir is not None else "a temporary folder"
    print(f"\nSaved to {where} and loaded back: same top {k} items.")

    return QuickstartResult(
        metrics=metrics,
        user_id=user_id,
        seen_item_ids=seen_item_ids,
        item_ids=item_ids,
        scores=scores,
        titles=titles,
        reloaded_item_ids=reloaded_item_ids,
        reloaded_scores=reloaded_scores,
        saved_folder=folder,
    )


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train, evaluate, save and reload a two-tower model on the embedded MovieLens data.")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    parser.add_argument("--output", type=Path, help="folder to save the model into (default: a temporary folder, deleted at exit)")
    parser.add_argument("--user", type=int, default=EXAMPLE_USER_ID, help=f"MovieLens user id to recommend for (default {EXAMPLE_USER_ID})")
    parser.add_argument("-k", type=int, default=10, help="number of recommendations (default 10)")
    return parser.parse_args()


if __name__ == "__main__":
    # TorchRec calls torch.fx.is_fx_tracing, whose deprecation notice is meant
    # for torch developers and is not about this run.
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    arguments = _parse_args()
    main(epochs=arguments.epochs, output_dir=arguments.output, user_id=arguments.user, k=arguments.k)
