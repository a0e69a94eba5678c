//! The Corral agent process.
