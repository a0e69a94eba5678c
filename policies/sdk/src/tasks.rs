//! The framework's tasks by instance name, and task ids.
//!
//! A task id is `{framework-id}.{name}.{attempt}`, where `attempt` counts the tasks of
//! that name the framework launched before (0 for the first launch). The host numbers
//! attempts (`Task::attempt`) and keeps the newest attempt of every name in the view, even
//! when it forgets older ended tasks, so ids never repeat.

use std::collections::BTreeMap;

use crate::{is_live, SchedulerView, Task};

/// The id of attempt `attempt` of instance `name`.
pub fn task_id(framework_id: &str, name: &str, attempt: usize) -> String {
    format!("{framework_id}.{name}.{attempt}")
}

/// Whether `name` can be an instance name: 1 to 64 ASCII letters, digits, `_` or `-`,
/// starting with a letter or digit (so that task ids stay valid and unambiguous).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// The view's tasks grouped by instance name, each group in launch order.
pub struct Tasks<'v> {
    framework_id: &'v str,
    by_name: BTreeMap<&'v str, Vec<&'v Task>>,
}

impl<'v> Tasks<'v> {
    /// Indexes `view.tasks` (O(tasks · log names)).
    pub fn new(view: &'v SchedulerView) -> Self {
        let mut by_name: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
        for t in &view.tasks {
            by_name.entry(t.name.as_str()).or_default().push(t);
        }
        Tasks {
            framework_id: &view.framework_id,
            by_name,
        }
    }

    /// The attempts of instance `name` the view holds, oldest first (the newest always).
    pub fn of(&self, name: &str) -> &[&'v Task] {
        self.by_name.get(name).map_or(&[], Vec::as_slice)
    }

    /// The instance's live (not terminal) attempts, oldest first.
    pub fn live(&self, name: &str) -> impl Iterator<Item = &'v Task> + '_ {
        self.of(name).iter().copied().filter(|t| is_live(t))
    }

    /// How many attempts of `name` were launched, older ones the view no longer holds
    /// included (the newest attempt's number, plus one).
    pub fn attempts(&self, name: &str) -> usize {
        self.of(name)
            .iter()
            .map(|t| t.attempt as usize + 1)
            .max()
            .unwrap_or(0)
    }

    /// The id of the next attempt of `name`.
    pub fn next_id(&self, name: &str) -> String {
        task_id(self.framework_id, name, self.attempts(name))
    }

    /// Instance names in the view (sorted), with their attempts.
    pub fn names(&self) -> impl Iterator<Item = (&'v str, &[&'v Task])> + '_ {
        self.by_name.iter().map(|(n, ts)| (*n, ts.as_slice()))
    }
}
