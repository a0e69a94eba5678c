//! Host ports for tasks: the ones a spec names, or free ones picked from the agent's range.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Mutex;

use corral_wire::pb::{PortMapping, PortRange};

/// The agent's port range and the host ports its tasks hold.
#[derive(Debug)]
pub(super) struct PortPool {
    ranges: Vec<PortRange>,
    used: Mutex<HashSet<u32>>,
}

impl PortPool {
    pub(super) fn new(ranges: Vec<PortRange>) -> Self {
        PortPool {
            ranges,
            used: Mutex::new(HashSet::new()),
        }
    }

    /// Gives every mapping a host port: the one it names, or a free one from the range
    /// (free: held by no task here and bindable on its address right now).
    ///
    /// # Errors
    ///
    /// A message when the range has no free port left.
    pub(super) fn allocate(&self, mappings: &[PortMapping]) -> Result<Vec<PortMapping>, String> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let mut taken = Vec::new();
        let mut out = Vec::with_capacity(mappings.len());
        for mapping in mappings {
            let mut mapping = mapping.clone();
            if mapping.host_port == 0 {
                let udp = mapping.protocol == "udp";
                let ip = mapping
                    .host_ip
                    .parse::<IpAddr>()
                    .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                let found = self
                    .ranges
                    .iter()
                    .flat_map(|r| r.begin..=r.end)
                    .find(|p| !used.contains(p) && bindable(ip, *p, udp));
                match found {
                    Some(port) => mapping.host_port = port,
                    None => {
                        for p in taken {
                            used.remove(&p);
                        }
                        return Err(format!(
                            "no free host port left in the agent's range for container port {}",
                            mapping.container_port
                        ));
                    }
                }
            }
            used.insert(mapping.host_port);
            taken.push(mapping.host_port);
            out.push(mapping);
        }
        Ok(out)
    }

    /// Marks ports as held (by a recovered task).
    pub(super) fn hold(&self, mappings: &[PortMapping]) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.extend(mappings.iter().map(|m| m.host_port));
    }

    /// Gives ports back when their task ends.
    pub(super) fn release(&self, mappings: &[PortMapping]) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        for m in mappings {
            used.remove(&m.host_port);
        }
    }
}

fn bindable(ip: IpAddr, port: u32, udp: bool) -> bool {
    let Ok(port) = u16::try_from(port) else {
        return false;
    };
    let addr = SocketAddr::new(ip, port);
    if udp {
        UdpSocket::bind(addr).is_ok()
    } else {
        TcpListener::bind(addr).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(host_port: u32) -> PortMapping {
        PortMapping {
            container_port: 80,
            host_port,
            protocol: "tcp".into(),
            host_ip: "127.0.0.1".into(),
        }
    }

    #[test]
    fn picks_free_ports_and_gives_them_back() {
        let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
        let busy_port = u32::from(busy.local_addr().expect("addr").port());
        let pool = PortPool::new(vec![PortRange {
            begin: busy_port,
            end: busy_port + 1,
        }]);
        let got = pool.allocate(&[mapping(0)]).expect("a port");
        assert_eq!(got[0].host_port, busy_port + 1, "the bound port is skipped");
        assert!(pool.allocate(&[mapping(0)]).is_err(), "range exhausted");
        pool.release(&got);
        drop(busy);
        let again = pool.allocate(&[mapping(0), mapping(0)]).expect("two ports");
        assert_ne!(again[0].host_port, again[1].host_port);
    }
}
