//! The corral command line.
