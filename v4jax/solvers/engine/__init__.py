"""The solver engine every method is written on: folds (:mod:`.folds`), voxel sharding
(:mod:`.sharding`), streamed kernels (:mod:`.kernels`), the per-target runner (:mod:`.runner`)
and the result protocol (:mod:`.result`)."""
