//! Frameworks end to end: the example schedulers in the offer loop of a real master, with
//! real agents and containers (the fairness test included).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    agent_id, unique, wait_for, ContainerCleanup, Master, Proc, TempDir, TEST_IMAGE,
};

/// A cluster: a master (agent timeout 2 s) and `n` Docker agents of 2 CPUs and 2 GB.
/// Dropped in field order: the processes first (a live scheduler would replace removed
/// containers), then their containers, then the state folders the cleanup reads ids from.
struct Cluster {
    master: Master,
    agents: Vec<Proc>,
    _cleanup: Vec<ContainerCleanup>,
    dirs: Vec<TempDir>,
    files: TempDir,
}

impl Cluster {
    fn start(n: usize, cpus: &str) -> Self {
        Self::start_with(n, cpus, &[])
    }

    /// As [`Cluster::start`], the master started with `extra` flags too.
    fn start_with(n: usize, cpus: &str, extra: &[&str]) -> Self {
        crate::harness::require_docker();
        let mut args = vec!["--agent-timeout", "2s", "--allocation-interval", "100ms"];
        args.extend_from_slice(extra);
        let master = Master::start(&args);
        let mut cluster = Cluster {
            master,
            agents: Vec::new(),
            _cleanup: Vec::new(),
            dirs: Vec::new(),
            files: TempDir::new("fw-files"),
        };
        for _ in 0..n {
            cluster.add_agent(cpus);
        }
        let master = &cluster.master;
        wait_for("the agents", Duration::from_secs(15), || {
            master.agents().len() == n
        });
        cluster.wait_for_ids();
        cluster
    }

    fn add_agent(&mut self, cpus: &str) {
        let dir = TempDir::new("fw-agent");
        let proc = self.master.agent(&dir.0, &["--cpus", cpus]);
        self._cleanup.push(ContainerCleanup(dir.0.clone()));
        self.agents.push(proc);
        self.dirs.push(dir);
    }

    /// Waits until every agent has written its id (just after the master lists it).
    fn wait_for_ids(&self) {
        wait_for("the agents' id files", Duration::from_secs(10), || {
            self.dirs.iter().all(|d| agent_id(&d.0).is_some())
        });
    }

    fn agent_ids(&self) -> Vec<String> {
        self.dirs.iter().filter_map(|d| agent_id(&d.0)).collect()
    }

    /// Writes `text` to a file and returns its path.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.files.0.join(name);
        std::fs::write(&path, text).expect("write workload");
        path
    }

    fn submit(&self, name: &str, scheduler: &str, workload: &str, extra: &[&str]) {
        let path = self.file(&format!("{name}.toml"), workload);
        let path = path.display().to_string();
        let mut args = vec![
            "framework",
            "submit",
            name,
            "--scheduler",
            scheduler,
            "--workload",
            &path,
        ];
        args.extend_from_slice(extra);
        self.master.cli_ok(&args);
    }

    fn framework(&self, name: &str) -> Value {
        self.master.cli_json(&["framework", "show", name, "--json"])
    }

    fn tasks(&self, name: &str) -> Vec<Value> {
        self.framework(name)["task_list"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn state(t: &Value) -> &str {
    t["state"].as_str().unwrap_or("")
}

fn running(tasks: &[Value]) -> Vec<&Value> {
    tasks
        .iter()
        .filter(|t| state(t) == "TASK_RUNNING")
        .collect()
}

fn generation(t: &Value) -> u64 {
    t["labels"]["corral.generation"]
        .as_str()
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

fn container_of(task_id: &str) -> String {
    format!("corral-{task_id}")
}

#[test]
fn batch_retries_failures_and_completes() {
    let cluster = Cluster::start(2, "2");
    let fw = unique("batch");
    let mut workload = String::from("retries = 2\nmax_failures = 1\n");
    for i in 0..20 {
        workload.push_str(&format!(
            "\n[[task]]\nname = \"ok-{i}\"\nimage = \"{TEST_IMAGE}\"\ncommand = [\"sh\", \"-c\", \"echo batch task {i}\"]\ncpus = 0.1\nmem_mb = 32\n"
        ));
    }
    workload.push_str(&format!(
        "\n[[task]]\nname = \"always-fails\"\nimage = \"{TEST_IMAGE}\"\ncommand = [\"sh\", \"-c\", \"exit 7\"]\ncpus = 0.1\nmem_mb = 32\n"
    ));
    cluster.submit(&fw, "batch", &workload, &["--wait", "--timeout", "240s"]);
    let f = cluster.framework(&fw);
    assert_eq!(f["state"], "completed", "{f}");
    let tasks = cluster.tasks(&fw);
    for i in 0..20 {
        let name = format!("ok-{i}");
        let attempts: Vec<&Value> = tasks.iter().filter(|t| t["name"] == name).collect();
        assert_eq!(attempts.len(), 1, "{name} ran once: {attempts:?}");
        assert_eq!(state(attempts[0]), "TASK_FINISHED", "{:?}", attempts[0]);
    }
    let failing: Vec<&Value> = tasks
        .iter()
        .filter(|t| t["name"] == "always-fails")
        .collect();
    assert_eq!(failing.len(), 3, "the failing task ran 1 + 2 retries times");
    for t in &failing {
        assert_eq!(state(t), "TASK_FAILED", "{t}");
        assert_eq!(t["exit_code"], 7, "{t}");
    }
    // Each relaunch waited for its backoff: 1 s after the first failure, 2 s after the
    // second (the master's clock launches, the agent's reports the end: one machine here).
    let at = |t: &Value, key: &str| t[key].as_u64().unwrap_or(0);
    for k in 0..2 {
        let (failed, next) = (failing[k], failing[k + 1]);
        let gap = at(next, "launched_ms").saturating_sub(at(failed, "updated_ms"));
        assert!(
            gap >= 1000 << k,
            "attempt {} launched {gap} ms after attempt {k} failed",
            k + 1
        );
    }
    // What a task printed comes back through the master.
    let ok0 = tasks
        .iter()
        .find(|t| t["name"] == "ok-0")
        .and_then(|t| t["id"].as_str())
        .unwrap_or("");
    let out = cluster.master.cli_ok(&["task", "logs", ok0]);
    assert!(out.contains("batch task 0"), "logs: {out}");
}

/// The attempt number at the end of a task id (`{framework}.{name}.{attempt}`).
fn attempt_of(id: &str) -> u32 {
    id.rsplit('.')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

fn attempt(t: &Value) -> u32 {
    attempt_of(t["id"].as_str().unwrap_or(""))
}

#[test]
fn a_crash_looping_service_keeps_only_its_newest_ended_tasks_across_a_restart() {
    let mut cluster = Cluster::start_with(1, "2", &["--max-completed-tasks-per-framework", "2"]);
    let fw = unique("crashloop");
    let workload = format!(
        "instances = 1\nbackoff_ms = 0\nimage = \"{TEST_IMAGE}\"\ncommand = [\"sh\", \"-c\", \"exit 3\"]\ncpus = 0.1\nmem_mb = 32\n"
    );
    cluster.submit(&fw, "service", &workload, &[]);
    // The instance fails and is relaunched over and over. The master keeps its two newest
    // ended attempts and the newest attempt (running or not), plus any launched since its
    // last pass; attempts go on being numbered from where they were, so an id that has
    // left the view never comes back.
    let mut seen = BTreeSet::new();
    let mut gone = BTreeSet::new();
    let mut settled = |c: &Cluster, from: u32| {
        let tasks = c.tasks(&fw);
        let ids: BTreeSet<String> = tasks
            .iter()
            .filter_map(|t| t["id"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(ids.len(), tasks.len(), "ids are unique: {tasks:?}");
        let back: Vec<&String> = ids.intersection(&gone).collect();
        assert!(
            back.is_empty(),
            "launched again under ids that had left the view: {back:?}"
        );
        gone.extend(seen.difference(&ids).cloned());
        seen = ids;
        let newest = tasks.iter().map(attempt).max().unwrap_or(0);
        (newest >= from + 5 && tasks.len() <= 4 && tasks.iter().all(|t| attempt(t) + 3 > newest))
            .then_some(newest)
    };
    let mut before = 0;
    wait_for(
        "six attempts, the oldest forgotten",
        Duration::from_secs(120),
        || settled(&cluster, 0).inspect(|&n| before = n).is_some(),
    );
    let instance = format!(".{fw}-0.");
    let first_forgotten = |c: &Cluster| {
        let all = c.master.cli_list(&["task", "list", "--json"]);
        let mine: Vec<&Value> = all
            .iter()
            .filter(|t| t["id"].as_str().is_some_and(|id| id.contains(&instance)))
            .collect();
        assert!(
            !mine.is_empty() && mine.iter().all(|t| attempt(t) > 0),
            "the first attempt is forgotten by the whole master: {mine:?}"
        );
    };
    first_forgotten(&cluster);

    // After a restart, forgotten tasks stay forgotten (the registry's file forgot them
    // too), and the numbering goes on: a scheduler that counted the tasks it is shown
    // would launch ids again.
    cluster.master.restart_gracefully();
    first_forgotten(&cluster);
    wait_for(
        "attempts after the restart",
        Duration::from_secs(120),
        || settled(&cluster, before).is_some(),
    );
    let f = cluster.framework(&fw);
    assert_eq!(f["state"], "active", "{f}");
}

fn service_workload(instances: u32, version: &str) -> String {
    format!(
        r#"instances = {instances}
image = "{TEST_IMAGE}"
command = ["sh", "-c", "echo {version}; sleep 600"]
cpus = 0.1
mem_mb = 32
env = {{ VERSION = "{version}" }}

[health]
command = ["true"]
interval_ms = 300
timeout_ms = 3000
retries = 3
"#
    )
}

/// Whether a task is launched and not ended, nor being killed.
fn is_live(t: &Value) -> bool {
    matches!(state(t), "TASK_STAGING" | "TASK_STARTING" | "TASK_RUNNING")
}

fn live(tasks: &[Value]) -> Vec<&Value> {
    tasks.iter().filter(|t| is_live(t)).collect()
}

fn docker_kill(container: &str) {
    let status = std::process::Command::new("docker")
        .args(["kill", container])
        .status()
        .expect("docker kill");
    assert!(status.success(), "docker kill {container}");
}

#[test]
fn service_keeps_its_instances_through_failures_and_rolls_updates() {
    let mut cluster = Cluster::start(2, "2");
    let fw = unique("svc");
    cluster.submit(&fw, "service", &service_workload(3, "v1"), &[]);
    let three_running = |c: &Cluster| {
        let tasks = c.tasks(&fw);
        running(&tasks).len() == 3 && live(&tasks).len() == 3
    };
    wait_for("3 running instances", Duration::from_secs(60), || {
        three_running(&cluster)
    });
    // Spread across the two agents.
    let tasks = cluster.tasks(&fw);
    let agents: BTreeSet<&str> = running(&tasks)
        .iter()
        .filter_map(|t| t["agent_id"].as_str())
        .collect();
    assert_eq!(
        agents.len(),
        2,
        "3 instances spread over 2 agents: {tasks:?}"
    );

    // A container dies: its instance is restarted.
    let victim = running(&tasks)[0]["id"].as_str().unwrap_or("").to_owned();
    docker_kill(&container_of(&victim));
    wait_for(
        "the killed instance replaced",
        Duration::from_secs(60),
        || {
            let tasks = cluster.tasks(&fw);
            let gone = tasks
                .iter()
                .any(|t| t["id"] == victim.as_str() && state(t) != "TASK_RUNNING");
            gone && three_running(&cluster)
        },
    );

    // An agent dies and stays dead: its instances are lost, and replaced on the other.
    let dead = agent_id(&cluster.dirs[0].0).expect("agent id");
    cluster.agents[0].kill9();
    wait_for(
        "the dead agent's instances lost and replaced",
        Duration::from_secs(60),
        || {
            let tasks = cluster.tasks(&fw);
            let lost = tasks
                .iter()
                .filter(|t| t["agent_id"] == dead.as_str())
                .all(|t| state(t) != "TASK_RUNNING");
            lost && running(&tasks).len() == 3
                && running(&tasks)
                    .iter()
                    .all(|t| t["agent_id"] != dead.as_str())
        },
    );
    assert!(
        cluster
            .tasks(&fw)
            .iter()
            .any(|t| t["agent_id"] == dead.as_str() && state(t) == "TASK_LOST"),
        "the dead agent's tasks are reported lost"
    );
    // Its containers outlive the agent process; they go with the test's cleanup.

    // A workload with a misspelt key is refused by the scheduler before it is taken: an
    // update leaves the framework as it was, a submission starts nothing.
    let typo = cluster.file(
        "typo.toml",
        &service_workload(3, "v2").replace("instances", "instnaces"),
    );
    let typo = typo.display().to_string();
    let out = cluster
        .master
        .cli(&["framework", "update", &fw, "--workload", &typo]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "a misspelt update is refused");
    assert!(
        said.contains("workload refused") && said.contains("instnaces"),
        "{said}"
    );
    // So is a swap to a scheduler that cannot run the workload (first-fit takes a list
    // of [[task]] entries, not a service).
    let slot = format!("framework/{fw}");
    let out = cluster.master.cli(&["policy", "swap", &slot, "first-fit"]);
    let swap_said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "a swap that would fail the service is refused"
    );
    assert!(
        swap_said.contains("would fail its framework"),
        "{swap_said}"
    );
    let f = cluster.framework(&fw);
    assert_eq!(
        (&f["state"], &f["generation"]),
        (&"active".into(), &1.into()),
        "{f}"
    );
    // Three instances still, once any that a health check timed out on (a `docker exec`
    // of `true` can take seconds on a loaded machine) are replaced.
    wait_for("3 running instances", Duration::from_secs(60), || {
        three_running(&cluster)
    });
    let stillborn = unique("typo");
    let out = cluster.master.cli(&[
        "framework",
        "submit",
        &stillborn,
        "--scheduler",
        "service",
        "--workload",
        &typo,
    ]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "a misspelt submission is refused");
    assert!(said.contains("instnaces"), "{said}");
    let out = cluster.master.cli(&["framework", "show", &stillborn]);
    assert!(
        !out.status.success(),
        "no framework {stillborn} was started"
    );

    // A rolling update: one instance at a time, never fewer than 3 running.
    let path = cluster.file("v2.toml", &service_workload(3, "v2"));
    cluster.master.cli_ok(&[
        "framework",
        "update",
        &fw,
        "--workload",
        &path.display().to_string(),
    ]);
    let mut max_new_starting = 0;
    wait_for(
        "every instance on generation 2",
        Duration::from_secs(120),
        || {
            let tasks = cluster.tasks(&fw);
            let running = running(&tasks);
            let live = live(&tasks);
            assert!(
                running.len() >= 3 || live.len() > running.len(),
                "{tasks:?}"
            );
            assert!(live.len() <= 4, "one instance at a time: {live:?}");
            let new_not_running = live
                .iter()
                .filter(|t| generation(t) == 2 && state(t) != "TASK_RUNNING")
                .count();
            max_new_starting = max_new_starting.max(new_not_running);
            running.len() == 3 && live.len() == 3 && running.iter().all(|t| generation(t) == 2)
        },
    );
    assert!(max_new_starting <= 1, "replacements go one at a time");
    let f = cluster.framework(&fw);
    assert_eq!(f["state"], "active");
    assert_eq!(f["generation"], 2);
    // The old instances were killed by the scheduler.
    wait_for("the old instances killed", Duration::from_secs(30), || {
        let tasks = cluster.tasks(&fw);
        let old_killed = tasks
            .iter()
            .filter(|t| generation(t) == 1 && state(t) == "TASK_KILLED")
            .count();
        let old_live = tasks
            .iter()
            .filter(|t| generation(t) == 1 && (is_live(t) || state(t) == "TASK_KILLING"))
            .count();
        old_killed >= 3 && old_live == 0
    });
}

#[test]
fn swapping_a_schedulers_placement_changes_where_new_instances_go() {
    let cluster = Cluster::start(2, "2");
    let fw = unique("swap");
    cluster.submit(&fw, "service", &service_workload(2, "v1"), &[]);
    wait_for("2 running instances", Duration::from_secs(60), || {
        running(&cluster.tasks(&fw)).len() == 2
    });
    let tasks = cluster.tasks(&fw);
    let placed: Vec<(String, String)> = running(&tasks)
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap_or("").to_owned(),
                t["agent_id"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_ne!(placed[0].1, placed[1].1, "spread puts one on each agent");

    let out = cluster.master.cli_ok(&[
        "policy",
        "swap",
        &format!("framework/{fw}"),
        "service-bin-pack",
    ]);
    assert!(out.contains(&format!("framework/{fw}")), "{out}");
    // An instance dies: bin-pack puts its replacement next to the survivor.
    let (victim, emptied) = &placed[0];
    let (survivor, packed) = &placed[1];
    docker_kill(&container_of(victim));
    wait_for("the replacement", Duration::from_secs(60), || {
        running(&cluster.tasks(&fw)).len() == 2
            && cluster
                .tasks(&fw)
                .iter()
                .any(|t| t["id"] == victim.as_str() && state(t) != "TASK_RUNNING")
    });
    let tasks = cluster.tasks(&fw);
    let replacement = running(&tasks)
        .into_iter()
        .find(|t| t["id"] != survivor.as_str())
        .expect("a replacement");
    assert_eq!(
        replacement["agent_id"],
        packed.as_str(),
        "bin-pack fills the busier agent, not {emptied}"
    );
    // Nothing was lost on the way: the survivor ran throughout.
    let s = tasks
        .iter()
        .find(|t| t["id"] == survivor.as_str())
        .expect("survivor");
    assert_eq!(state(s), "TASK_RUNNING");
    assert!(tasks.iter().all(|t| state(t) != "TASK_LOST"), "{tasks:?}");
    let policies = cluster.master.cli_ok(&["policy", "list"]);
    assert!(policies.contains(&format!("framework/{fw}")), "{policies}");
}

/// A batch of long tasks that never ends by itself: unbounded demand.
fn greedy_batch(tasks: u32) -> String {
    let mut w = String::from("retries = 0\nmax_failures = 1000\n");
    for i in 0..tasks {
        w.push_str(&format!(
            "\n[[task]]\nname = \"t{i}\"\nimage = \"{TEST_IMAGE}\"\ncommand = [\"sh\", \"-c\", \"sleep 600\"]\ncpus = 0.5\nmem_mb = 64\n"
        ));
    }
    w
}

fn share(cluster: &Cluster, name: &str) -> f64 {
    cluster.framework(name)["dominant_share"]
        .as_f64()
        .unwrap_or(0.0)
}

fn running_count(cluster: &Cluster, name: &str) -> usize {
    running(&cluster.tasks(name)).len()
}

#[test]
fn frameworks_share_the_cluster_by_weight() {
    crate::harness::require_docker();
    // Frameworks first, agents after: both compete for every offer from the start.
    let mut cluster = Cluster::start(0, "3");
    let (a, b) = (unique("fair-a"), unique("fair-b"));
    cluster.submit(
        &a,
        "batch",
        &greedy_batch(30),
        &["--role", "ra", "--weight", "1"],
    );
    cluster.submit(
        &b,
        "batch",
        &greedy_batch(30),
        &["--role", "rb", "--weight", "1"],
    );
    cluster.add_agent("3");
    cluster.add_agent("3");
    // 2 agents × 3 CPUs = 12 tasks of 0.5 CPU: the cluster fills up.
    wait_for("a full cluster", Duration::from_secs(90), || {
        running_count(&cluster, &a) + running_count(&cluster, &b) == 12
    });
    cluster.wait_for_ids();
    let (sa, sb) = (share(&cluster, &a), share(&cluster, &b));
    let task_share = 0.5 / 6.0;
    assert!(
        (sa - sb).abs() <= task_share + 1e-9,
        "equal weights: shares {sa} and {sb} within one task ({task_share})"
    );
    cluster.master.cli_ok(&["framework", "kill", &a]);
    cluster.master.cli_ok(&["framework", "kill", &b]);
    wait_for("the cluster emptied", Duration::from_secs(60), || {
        cluster
            .master
            .agents()
            .iter()
            .all(|ag| ag["used"]["cpus"].as_f64() == Some(0.0))
    });

    // Weights 2 and 1, submitted while the cluster is empty and before a cycle can fill
    // it for one of them alone: allocation waits for both by stopping the agents' offers
    // with a drain while they are submitted.
    let ids = cluster.agent_ids();
    for id in &ids {
        cluster.master.cli_ok(&["agent", "drain", id]);
    }
    let (c, d) = (unique("fair-c"), unique("fair-d"));
    cluster.submit(
        &c,
        "batch",
        &greedy_batch(30),
        &["--role", "rc", "--weight", "2"],
    );
    cluster.submit(
        &d,
        "batch",
        &greedy_batch(30),
        &["--role", "rd", "--weight", "1"],
    );
    for id in &ids {
        cluster.master.cli_ok(&["agent", "undrain", id]);
    }
    wait_for("a full cluster", Duration::from_secs(90), || {
        running_count(&cluster, &c) + running_count(&cluster, &d) == 12
    });
    let (nc, nd) = (running_count(&cluster, &c), running_count(&cluster, &d));
    assert_eq!((nc, nd), (8, 4), "weights 2:1 give 8 and 4 of 12 tasks");
    let (sc, sd) = (share(&cluster, &c), share(&cluster, &d));
    assert!((sc / sd - 2.0).abs() < 1e-9, "shares {sc} and {sd} are 2:1");
}

#[test]
fn a_scheduler_that_breaks_the_rules_fails_alone() {
    let cluster = Cluster::start(2, "2");
    let bad = unique("bad");
    let good = unique("hello");
    cluster.submit(&bad, corral_policy::fixtures::BAD_SCHEDULER, "", &[]);
    cluster.submit(
        &good,
        "hello",
        &format!("count = 4\nimage = \"{TEST_IMAGE}\"\nmessage = \"still here\"\n"),
        &["--wait", "--timeout", "120s"],
    );
    let f = cluster.framework(&good);
    assert_eq!(f["state"], "completed", "{f}");
    let b = cluster.framework(&bad);
    assert!(
        b["scheduler_errors"].as_u64().unwrap_or(0) > 0,
        "the bad scheduler's answers are errors: {b}"
    );
    let err = b["last_error"].as_str().unwrap_or("");
    assert!(
        err.contains("offer"),
        "the error says what was wrong: {err}"
    );
    assert_eq!(
        b["active_tasks"], 0,
        "nothing the bad scheduler decided was launched: {b}"
    );
    // The master is fine and says so.
    assert_eq!(cluster.master.agents().len(), 2);
}

#[test]
fn corral_up_runs_hello_on_the_first_try() {
    crate::harness::require_docker();
    let dir = TempDir::new("up");
    let listen = crate::harness::free_udp_addr();
    let args: Vec<String> = [
        "--log",
        "info",
        "up",
        "--state",
        &dir.0.display().to_string(),
        "--listen",
        &listen.to_string(),
        "--http",
        "off",
        "--agent-http",
        "off",
        "--hello-image",
        TEST_IMAGE,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let up = Proc::spawn(&args, dir.0.join("up.log"));
    let _cleanup = ContainerCleanup(dir.0.join("agent"));
    wait_for("hello to complete", Duration::from_secs(120), || {
        up.log_text().contains("hello completed")
    });
    let log = up.log_text();
    assert!(log.contains("corral is up"), "{log}");
    assert!(!log.contains("did not run"), "{log}");
    drop(up);
}

#[test]
fn framework_try_runs_a_workload_on_a_simulated_cluster_offline() {
    let dir = TempDir::new("try");
    let workload = dir.0.join("w.toml");
    let try_it = |text: &str| {
        std::fs::write(&workload, text).expect("workload");
        let out = std::process::Command::new(crate::harness::corral_bin())
            .args(["framework", "try", "demo", "--scheduler", "first-fit"])
            .arg("--workload")
            .arg(&workload)
            .args(["--agents", "2", "--run-time", "100ms", "--json"])
            .output()
            .expect("run corral");
        let f: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code(), f)
    };
    let (code, f) = try_it("backoff_ms = 50\n[[task]]\nname = \"a\"\n[[task]]\nname = \"b\"\n");
    assert_eq!(code, Some(0), "{f}");
    assert_eq!(f["state"], "completed", "{f}");
    let states: Vec<&str> = f["task_list"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["state"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(states, ["TASK_FINISHED", "TASK_FINISHED"], "{f}");
    // A task whose label makes it exit 1 is retried, then fails the framework (exit 1).
    let (code, f) = try_it(
        "backoff_ms = 50\n[[task]]\nname = \"flaky\"\nretries = 2\nlabels = { \"sim.exit_code\" = \"1\" }\n",
    );
    assert_eq!(code, Some(1), "{f}");
    assert_eq!(f["state"], "failed", "{f}");
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("task flaky failed 3 times")),
        "{f}"
    );
    assert_eq!(f["task_list"].as_array().map(Vec::len), Some(3), "{f}");
}
