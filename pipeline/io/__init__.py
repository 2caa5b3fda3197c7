"""The Ray-free layer below pipeline/ and stages/: filesystems and atomic writes (`fs`), input
discovery and chunk planning (`inputs`)."""
