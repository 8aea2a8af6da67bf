"""Features: AlexNet in Flax (:mod:`.models`), weight converters (:mod:`.weights`), image
preparation (:mod:`.images`), the retina warp (:mod:`.retina`) and batched extraction into memory
or HDF5 (:mod:`.extraction`)."""
