//! Containerizers for Corral agents: Docker (bollard) and simulated.
