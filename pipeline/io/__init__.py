"""The Ray-free layer below pipeline/ and stages/: filesystems and atomic writes (`fs`), input
formats and chunk planning (`inputs`), input discovery and probing (`discover`), retried reads of
input files checked against the plan (`retry`), and part file names (`parts`)."""
