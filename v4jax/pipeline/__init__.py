"""The study layer: the original study end to end (:mod:`.study`), out-of-core sweeps
(:mod:`.sweep`), figures and tables (:mod:`.report`) and the command line (:mod:`.cli`)."""
