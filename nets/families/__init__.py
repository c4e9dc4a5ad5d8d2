"""One module per model family; importing this package registers every builder."""

from nets.families import resnet  # noqa: F401
