"""One module per model family; importing this package registers every builder."""

from nets.families import dynamic, keras_resnet, resnet, rrdb_attention, template, vgg  # noqa: F401
