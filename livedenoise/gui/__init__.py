"""The live viewer (`livedenoise view`): imaging and ephys windows over receiver-thread sources."""
