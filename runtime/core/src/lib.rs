//! Corral's sans-IO core: resources, registry, offers, task states.
