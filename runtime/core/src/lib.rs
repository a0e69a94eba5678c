//! Corral's sans-IO core: the bookkeeping that decides things, as plain Rust.
//!
//! Nothing here touches a socket, a container, a clock or wasm. Time comes in as a `now`
//! argument (milliseconds since the Unix epoch); calls return the events they caused and
//! the actors in `corral-master` and `corral-agent` do the IO around them.

// Tests unwrap freely: a panic is how a test fails.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod agents;
pub mod drf;
pub mod resources;
pub mod tasks;
pub mod view;

pub use resources::Resources;

/// Formats milli-CPUs as a person reads them: `1.5`, `2`, `0.25`.
pub fn format_cpus(cpus_milli: u64) -> String {
    let whole = cpus_milli / 1000;
    let frac = cpus_milli % 1000;
    if frac == 0 {
        format!("{whole}")
    } else {
        let s = format!("{whole}.{frac:03}");
        s.trim_end_matches('0').to_owned()
    }
}

/// Parses CPUs as a person writes them (`1.5`) into milli-CPUs.
///
/// # Errors
/// A message when the text is not a non-negative number with at most three decimals.
pub fn parse_cpus(text: &str) -> Result<u64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of CPUs"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?}: CPUs must be zero or more"));
    }
    Ok((value * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_format_and_parse() {
        assert_eq!(format_cpus(1500), "1.5");
        assert_eq!(format_cpus(2000), "2");
        assert_eq!(format_cpus(250), "0.25");
        assert_eq!(parse_cpus("0.25"), Ok(250));
        assert!(parse_cpus("-1").is_err());
        assert!(parse_cpus("lots").is_err());
    }
}
