//! Resource arithmetic: CPUs, memory, disk and port ranges.

use corral_wire::pb;
use serde::{Deserialize, Serialize};

/// A bundle of resources. CPUs are in thousandths of a CPU so that sums are exact.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPUs × 1000.
    pub cpus_milli: u64,
    /// Memory in MB.
    pub mem_mb: u64,
    /// Disk in MB.
    pub disk_mb: u64,
    /// Port ranges, inclusive, sorted and disjoint.
    pub ports: Vec<(u32, u32)>,
}

impl Resources {
    /// The number of ports in the ranges.
    pub fn port_count(&self) -> u64 {
        self.ports
            .iter()
            .map(|(b, e)| u64::from(e.saturating_sub(*b)) + 1)
            .sum()
    }

    /// Whether `other` fits inside `self`, port by port.
    pub fn contains(&self, other: &Resources) -> bool {
        self.cpus_milli >= other.cpus_milli
            && self.mem_mb >= other.mem_mb
            && self.disk_mb >= other.disk_mb
            && other
                .ports
                .iter()
                .all(|&(b, e)| self.ports.iter().any(|&(sb, se)| sb <= b && e <= se))
    }

    /// `self + other`.
    pub fn add(&self, other: &Resources) -> Resources {
        let mut ports = self.ports.clone();
        ports.extend_from_slice(&other.ports);
        Resources {
            cpus_milli: self.cpus_milli.saturating_add(other.cpus_milli),
            mem_mb: self.mem_mb.saturating_add(other.mem_mb),
            disk_mb: self.disk_mb.saturating_add(other.disk_mb),
            ports: normalize(ports),
        }
    }

    /// `self - other`, each quantity saturating at zero, and `self`'s ports without
    /// `other`'s.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        let mut ports = self.ports.clone();
        for &(bb, be) in &other.ports {
            ports = ports
                .into_iter()
                .flat_map(|(ab, ae)| {
                    let mut left = Vec::with_capacity(2);
                    if ae < bb || be < ab {
                        left.push((ab, ae));
                    } else {
                        if ab < bb {
                            left.push((ab, bb - 1));
                        }
                        if be < ae {
                            left.push((be + 1, ae));
                        }
                    }
                    left
                })
                .collect();
        }
        Resources {
            cpus_milli: self.cpus_milli.saturating_sub(other.cpus_milli),
            mem_mb: self.mem_mb.saturating_sub(other.mem_mb),
            disk_mb: self.disk_mb.saturating_sub(other.disk_mb),
            ports,
        }
    }

    /// `self - other`, or `None` when `other` does not fit in `self`.
    pub fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        if !self.contains(other) {
            return None;
        }
        let mut ports = self.ports.clone();
        for &(b, e) in &other.ports {
            ports = ports
                .into_iter()
                .flat_map(|(sb, se)| {
                    if e < sb || b > se {
                        vec![(sb, se)]
                    } else {
                        let mut out = Vec::new();
                        if sb < b {
                            out.push((sb, b - 1));
                        }
                        if e < se {
                            out.push((e + 1, se));
                        }
                        out
                    }
                })
                .collect();
        }
        Some(Resources {
            cpus_milli: self.cpus_milli - other.cpus_milli,
            mem_mb: self.mem_mb - other.mem_mb,
            disk_mb: self.disk_mb - other.disk_mb,
            ports,
        })
    }
}

/// Sorts ranges and merges overlapping or adjacent ones.
pub fn normalize(mut ports: Vec<(u32, u32)>) -> Vec<(u32, u32)> {
    ports.retain(|(b, e)| b <= e);
    ports.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(ports.len());
    for (b, e) in ports {
        match out.last_mut() {
            Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((b, e)),
        }
    }
    out
}

impl From<&pb::Resources> for Resources {
    fn from(r: &pb::Resources) -> Self {
        Resources {
            cpus_milli: r.cpus_milli,
            mem_mb: r.mem_mb,
            disk_mb: r.disk_mb,
            ports: normalize(r.ports.iter().map(|p| (p.begin, p.end)).collect()),
        }
    }
}

impl From<&Resources> for pb::Resources {
    fn from(r: &Resources) -> Self {
        pb::Resources {
            cpus_milli: r.cpus_milli,
            mem_mb: r.mem_mb,
            disk_mb: r.disk_mb,
            ports: r
                .ports
                .iter()
                .map(|&(begin, end)| pb::PortRange { begin, end })
                .collect(),
        }
    }
}

impl std::fmt::Display for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cpus {}, mem {} MB, disk {} MB",
            crate::format_cpus(self.cpus_milli),
            self.mem_mb,
            self.disk_mb
        )?;
        if !self.ports.is_empty() {
            let ranges: Vec<String> = self.ports.iter().map(|(b, e)| format!("{b}-{e}")).collect();
            write!(f, ", ports {}", ranges.join(","))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(c: u64, m: u64, ports: Vec<(u32, u32)>) -> Resources {
        Resources {
            cpus_milli: c,
            mem_mb: m,
            disk_mb: 0,
            ports,
        }
    }

    #[test]
    fn subtracting_a_port_splits_its_range() {
        let total = r(4000, 1024, vec![(31000, 31010)]);
        let used = r(1000, 512, vec![(31005, 31005)]);
        let left = total.checked_sub(&used).unwrap();
        assert_eq!(left.ports, vec![(31000, 31004), (31006, 31010)]);
        assert_eq!(left.cpus_milli, 3000);
        assert_eq!(left.add(&used), total);
    }

    #[test]
    fn more_than_there_is_does_not_fit() {
        let total = r(1000, 100, vec![(10, 20)]);
        assert!(total.checked_sub(&r(1001, 0, vec![])).is_none());
        assert!(total.checked_sub(&r(0, 0, vec![(19, 21)])).is_none());
    }

    proptest! {
        #[test]
        fn sub_then_add_is_identity(c in 0u64..10_000, m in 0u64..10_000, uc in 0u64..10_000, um in 0u64..10_000, p in 0u32..50) {
            let total = r(c, m, vec![(100, 150)]);
            let used = r(uc, um, vec![(100 + p, 100 + p)]);
            match total.checked_sub(&used) {
                Some(left) => prop_assert_eq!(left.add(&used), total),
                None => prop_assert!(uc > c || um > m),
            }
        }
    }
    #[test]
    fn saturating_sub_removes_ports() {
        let a = Resources {
            cpus_milli: 1000,
            mem_mb: 100,
            disk_mb: 0,
            ports: vec![(31000, 31010)],
        };
        let b = Resources {
            cpus_milli: 2000,
            mem_mb: 50,
            disk_mb: 0,
            ports: vec![(31005, 31005), (40000, 40000)],
        };
        let d = a.saturating_sub(&b);
        assert_eq!(d.cpus_milli, 0);
        assert_eq!(d.mem_mb, 50);
        assert_eq!(d.ports, vec![(31000, 31004), (31006, 31010)]);
    }
}
