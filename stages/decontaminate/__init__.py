"""Train/holdout split and decontamination: `rules` holds the rules over batches and texts (Ray-free),
`step` applies them on Ray to the documents dedup kept."""

from slimpipe.stages.decontaminate.rules import (
    EVAL,
    HOLDOUT,
    Contaminants,
    contaminant_hashes,
    frequent_ngrams,
    holdout_mask,
    ngram_doc_freq,
    split_names,
)

__all__ = [
    "EVAL",
    "HOLDOUT",
    "Contaminants",
    "contaminant_hashes",
    "frequent_ngrams",
    "holdout_mask",
    "ngram_doc_freq",
    "split_names",
]
