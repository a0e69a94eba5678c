//! Workload files: TOML that a scheduler reads from `view.workload`.
//!
//! A scheduler takes its own keys out of the file with a [`Doc`] and reads the task fields
//! that remain with [`TaskFields`], which refuses keys it does not know, so a typo is an
//! error rather than a default. Every error starts with `workload:` and is meant for the
//! framework's `fail` message.
//!
//! Task fields (all optional; defaults in brackets):
//!
//! ```toml
//! image = "busybox:latest"             # ["busybox:latest"]
//! command = ["sh", "-c", "echo hi"]    # replaces the image's entrypoint [none]
//! args = []                            # [none]
//! env = { GREETING = "hi" }            # [none]
//! cpus = 0.1                           # [0.1]
//! mem_mb = 32                          # [32]
//! disk_mb = 0                          # [0]
//! ports = [8080, { container = 53, host = 31053, protocol = "udp" }]  # host 0 = any
//! network = "bridge"                   # bridge | host | none [bridge]
//! volumes = [{ source = "/srv", path = "/data", read_only = true }]
//! labels = { team = "web" }
//! kill_grace_ms = 5000                 # [the agent's default]
//!
//! [health]                             # one of command, http, tcp
//! http = { port = 8080, path = "/" }   # or: tcp = 8080, or: command = ["test", "-f", "/ok"]
//! interval_ms = 10000                  # [10000]
//! timeout_ms = 5000                    # [5000]
//! retries = 3                          # [3]
//! grace_ms = 0                         # [0]
//! ```

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::{
    Check, HealthCheck, HttpCheck, KeyValue, NetworkMode, PortMapping, PortRange, Resources,
    TaskSpec, Volume,
};

/// The image of a task that names none.
pub const DEFAULT_IMAGE: &str = "busybox:latest";
/// The CPUs of a task that names none.
pub const DEFAULT_CPUS: f64 = 0.1;
/// The memory of a task that names none, in megabytes.
pub const DEFAULT_MEM_MB: u64 = 32;

/// A parsed workload file whose keys a scheduler takes one by one.
#[derive(Debug, Clone, Default)]
pub struct Doc {
    table: toml::Table,
    /// The keys asked for with [`Doc::take`], for the message about an unknown key.
    known: Vec<&'static str>,
}

impl Doc {
    /// Parses `text` as TOML.
    ///
    /// # Errors
    ///
    /// `workload: line N: …` when it is not valid TOML.
    pub fn parse(text: &str) -> Result<Doc, String> {
        text.parse::<toml::Table>()
            .map(Doc::from_table)
            .map_err(|e| {
                let line = e
                    .span()
                    .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
                match line {
                    Some(line) => format!("workload: line {line}: {}", e.message().trim()),
                    None => format!("workload: {}", e.message().trim()),
                }
            })
    }

    /// A table (one `[[task]]` entry, say) as a document of its own.
    pub fn from_table(table: toml::Table) -> Doc {
        Doc {
            table,
            known: Vec::new(),
        }
    }

    /// Removes `key` and reads it as a `T`; `None` when it is absent.
    ///
    /// # Errors
    ///
    /// `workload: KEY: …` when the value is not a `T`.
    pub fn take<T: DeserializeOwned>(&mut self, key: &'static str) -> Result<Option<T>, String> {
        self.known.push(key);
        match self.table.remove(key) {
            None => Ok(None),
            Some(value) => value
                .try_into()
                .map(Some)
                .map_err(|e| format!("workload: {key}: {}", e.message().trim())),
        }
    }

    /// Reads the keys that remain as a `T` (usually [`TaskFields`]).
    ///
    /// # Errors
    ///
    /// `workload: …` naming an unknown key (with every key allowed there, and the one
    /// meant when it is a slip of a letter or two) or a value of the wrong type.
    pub fn rest<T: DeserializeOwned>(self) -> Result<T, String> {
        let Doc { table, known } = self;
        // The error does not say where an unknown key is: the keys only this table has
        // (none within it), noted before the table is read.
        let only_here: Vec<String> = table
            .keys()
            .filter(|k| !nested_has(&table, k))
            .cloned()
            .collect();
        toml::Value::Table(table).try_into().map_err(|e| {
            let message = e.message().trim();
            let Some((key, listed)) = unknown_key(message) else {
                return format!("workload: {message}");
            };
            // Only in this table: the keys taken out of it before are allowed too. In a
            // table within (or both): the keys allowed in the table that has it.
            let (mut allowed, place): (Vec<String>, _) = if only_here.iter().any(|k| k == key) {
                (known.iter().map(|k| (*k).to_owned()).collect(), "here")
            } else {
                (Vec::new(), "there")
            };
            allowed.extend(listed);
            let hint = closest(key, &allowed)
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            let allowed: Vec<String> = allowed.iter().map(|k| format!("`{k}`")).collect();
            format!(
                "workload: unknown key `{key}`{hint}; the keys {place} are {}",
                allowed.join(", ")
            )
        })
    }
}

/// Whether a table within `table` (at any depth, arrays included) has `key`.
fn nested_has(table: &toml::Table, key: &str) -> bool {
    fn within(v: &toml::Value, key: &str) -> bool {
        match v {
            toml::Value::Table(t) => t.contains_key(key) || nested_has(t, key),
            toml::Value::Array(a) => a.iter().any(|v| within(v, key)),
            _ => false,
        }
    }
    table.values().any(|v| within(v, key))
}

/// The key and the allowed keys of serde's "unknown field `x`, expected one of `a`, `b`".
fn unknown_key(message: &str) -> Option<(&str, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let listed = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    Some((key, listed))
}

/// The allowed key `key` is most likely a slip for: at most two letters added, dropped,
/// changed or swapped.
fn closest<'a>(key: &str, allowed: &'a [String]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|k| (edit_distance(key, k), k.as_str()))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Letters to add, drop, change or swap (two neighbours) to make `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // Row `i` of the table (`a`'s first `i` letters against each prefix of `b`) is
    // `rows[i % 3]`: a swap looks two rows back.
    let mut rows = vec![vec![0usize; b.len() + 1]; 3];
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        let (this, one_back, two_back) = (i % 3, (i + 2) % 3, (i + 1) % 3);
        rows[this][0] = i;
        for j in 1..=b.len() {
            let change = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (rows[one_back][j] + 1)
                .min(rows[this][j - 1] + 1)
                .min(rows[one_back][j - 1] + change);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(rows[two_back][j - 2] + 1);
            }
            rows[this][j] = d;
        }
    }
    rows[a.len() % 3][b.len()]
}

/// Parses a whole workload file as a `T`.
///
/// # Errors
///
/// As [`Doc::parse`] and [`Doc::rest`].
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    Doc::parse(text)?.rest()
}

/// The task fields of a workload, each optional so that an entry can inherit the file's
/// defaults ([`TaskFields::over`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFields {
    pub image: Option<String>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub cpus: Option<f64>,
    pub mem_mb: Option<u64>,
    pub disk_mb: Option<u64>,
    pub ports: Option<Vec<Port>>,
    pub network: Option<Network>,
    pub volumes: Option<Vec<VolumeFields>>,
    pub labels: Option<BTreeMap<String, String>>,
    pub kill_grace_ms: Option<u64>,
    pub health: Option<HealthFields>,
}

/// A port: a bare number is a TCP container port with any host port.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Port {
    Container(u32),
    Mapping(PortFields),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortFields {
    pub container: u32,
    /// 0 (the default): any free host port of the offer.
    #[serde(default)]
    pub host: u32,
    pub protocol: Option<String>,
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Bridge,
    Host,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeFields {
    pub source: String,
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFields {
    pub command: Option<Vec<String>>,
    pub http: Option<HttpFields>,
    pub tcp: Option<u32>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub retries: Option<u32>,
    pub grace_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFields {
    pub port: u32,
    pub path: Option<String>,
}

impl TaskFields {
    /// These fields, with the ones not given taken from `defaults`.
    pub fn over(self, defaults: &TaskFields) -> TaskFields {
        let d = defaults.clone();
        TaskFields {
            image: self.image.or(d.image),
            command: self.command.or(d.command),
            args: self.args.or(d.args),
            env: self.env.or(d.env),
            cpus: self.cpus.or(d.cpus),
            mem_mb: self.mem_mb.or(d.mem_mb),
            disk_mb: self.disk_mb.or(d.disk_mb),
            ports: self.ports.or(d.ports),
            network: self.network.or(d.network),
            volumes: self.volumes.or(d.volumes),
            labels: self.labels.or(d.labels),
            kill_grace_ms: self.kill_grace_ms.or(d.kill_grace_ms),
            health: self.health.or(d.health),
        }
    }

    /// The task these fields describe, with defaults filled in and values checked.
    ///
    /// # Errors
    ///
    /// `workload: …` for CPUs that are negative or not a number, a task with neither CPUs
    /// nor memory, an empty image, a port of 0 or above 65535, ports without bridge
    /// networking, a health check that is not exactly one of `command`, `http` and `tcp`.
    pub fn template(&self) -> Result<Template, String> {
        let cpus = self.cpus.unwrap_or(DEFAULT_CPUS);
        if !cpus.is_finite() || !(0.0..=1_000_000.0).contains(&cpus) {
            return Err(format!(
                "workload: cpus must be a number of CPUs, got {cpus}"
            ));
        }
        let resources = Resources {
            cpus_milli: (cpus * 1000.0).round() as u64,
            mem_mb: self.mem_mb.unwrap_or(DEFAULT_MEM_MB),
            disk_mb: self.disk_mb.unwrap_or(0),
        };
        if resources.cpus_milli == 0 && resources.mem_mb == 0 {
            return Err("workload: a task needs some cpus or mem_mb".into());
        }
        let image = self.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into());
        if image.trim().is_empty() {
            return Err("workload: image is empty".into());
        }
        let mut ports = Vec::new();
        for p in self.ports.iter().flatten() {
            let m = match p {
                Port::Container(c) => PortMapping {
                    container_port: *c,
                    host_port: 0,
                    protocol: "tcp".into(),
                    host_ip: String::new(),
                },
                Port::Mapping(f) => PortMapping {
                    container_port: f.container,
                    host_port: f.host,
                    protocol: f.protocol.clone().unwrap_or_else(|| "tcp".into()),
                    host_ip: f.host_ip.clone().unwrap_or_default(),
                },
            };
            if !(1..=65535).contains(&m.container_port) || m.host_port > 65535 {
                return Err(format!(
                    "workload: port {} (host {}) is not between 1 and 65535",
                    m.container_port, m.host_port
                ));
            }
            if m.protocol != "tcp" && m.protocol != "udp" {
                return Err(format!(
                    "workload: port protocol must be tcp or udp, got {:?}",
                    m.protocol
                ));
            }
            ports.push(m);
        }
        let network = self.network.unwrap_or(Network::Bridge);
        if !ports.is_empty() && !matches!(network, Network::Bridge) {
            return Err(
                "workload: ports need network = \"bridge\" (with host networking a task binds host ports itself)"
                    .into(),
            );
        }
        let health = self.health.as_ref().map(health_check).transpose()?;
        Ok(Template {
            image,
            command: self.command.clone().unwrap_or_default(),
            args: self.args.clone().unwrap_or_default(),
            env: pairs(self.env.as_ref()),
            resources,
            ports,
            network: match network {
                Network::Bridge => NetworkMode::Bridge,
                Network::Host => NetworkMode::Host,
                Network::None => NetworkMode::None,
            },
            volumes: self
                .volumes
                .iter()
                .flatten()
                .map(|v| Volume {
                    source: v.source.clone(),
                    container_path: v.path.clone(),
                    read_only: v.read_only,
                })
                .collect(),
            labels: pairs(self.labels.as_ref()),
            kill_grace_ms: self.kill_grace_ms.unwrap_or(0),
            health,
        })
    }
}

fn pairs(map: Option<&BTreeMap<String, String>>) -> Vec<KeyValue> {
    map.into_iter()
        .flatten()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

fn health_check(h: &HealthFields) -> Result<HealthCheck, String> {
    let check = match (&h.command, &h.http, h.tcp) {
        (Some(c), None, None) if !c.is_empty() => Check::Command(c.clone()),
        (None, Some(http), None) => Check::Http(HttpCheck {
            port: http.port,
            path: http.path.clone().unwrap_or_else(|| "/".into()),
        }),
        (None, None, Some(port)) => Check::Tcp(port),
        _ => {
            return Err(
                "workload: health needs exactly one of command (not empty), http or tcp".into(),
            )
        }
    };
    Ok(HealthCheck {
        check,
        interval_ms: h.interval_ms.unwrap_or(10_000),
        timeout_ms: h.timeout_ms.unwrap_or(5_000),
        retries: h.retries.unwrap_or(3),
        grace_period_ms: h.grace_ms.unwrap_or(0),
    })
}

/// A task to launch, resolved from [`TaskFields`].
#[derive(Debug, Clone)]
pub struct Template {
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<KeyValue>,
    pub resources: Resources,
    /// Host port 0 takes any free port of the offer.
    pub ports: Vec<PortMapping>,
    pub network: NetworkMode,
    pub volumes: Vec<Volume>,
    pub labels: Vec<KeyValue>,
    pub kill_grace_ms: u64,
    pub health: Option<HealthCheck>,
}

impl Template {
    /// The host ports the task asks for, one per port mapping (0: any).
    pub fn host_ports(&self) -> Vec<u32> {
        self.ports.iter().map(|p| p.host_port).collect()
    }

    /// The spec of one task from this template, with the host ports the placement chose
    /// (one per port mapping, in order; see [`crate::place::Placement`]).
    pub fn spec(
        &self,
        task_id: String,
        framework_id: &str,
        name: &str,
        host_ports: &[u32],
    ) -> TaskSpec {
        let port_mappings: Vec<PortMapping> = self
            .ports
            .iter()
            .zip(host_ports.iter().copied().chain(std::iter::repeat(0)))
            .map(|(m, host)| PortMapping {
                host_port: if host == 0 { m.host_port } else { host },
                ..m.clone()
            })
            .collect();
        let ports = port_mappings
            .iter()
            .filter(|m| m.host_port != 0)
            .map(|m| PortRange {
                begin: m.host_port,
                end: m.host_port,
            })
            .collect();
        TaskSpec {
            task_id,
            framework_id: framework_id.into(),
            name: name.into(),
            image: self.image.clone(),
            command: self.command.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            resources: self.resources,
            ports,
            port_mappings,
            network_mode: self.network,
            volumes: self.volumes.clone(),
            labels: self.labels.clone(),
            kill_grace_period_ms: self.kill_grace_ms,
            health_check: self.health.clone(),
        }
    }
}
