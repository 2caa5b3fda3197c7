"""Train/holdout split and decontamination: `rules` holds the rules over batches and texts (Ray-free),
`step` applies them on Ray to the documents dedup kept."""

from slimpipe.stages.decontaminate.rules import (
    EVAL,
    HOLDOUT,
    contaminant_hashes,
    holdout_mask,
    matches,
    split_names,
    train_hashes,
    verdicts,
)

__all__ = [
    "EVAL",
    "HOLDOUT",
    "contaminant_hashes",
    "holdout_mask",
    "matches",
    "split_names",
    "train_hashes",
    "verdicts",
]
