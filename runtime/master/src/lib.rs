//! The Corral master: actors, registry, allocation.
