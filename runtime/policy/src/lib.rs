//! Corral's WebAssembly policy host.
