//! What can go wrong when a policy is called or swapped.

use std::time::Duration;

/// A policy call whose result was discarded. The slot counts it against the policy.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum PolicyError {
    #[error("no policy is loaded in slot {slot}")]
    Empty { slot: String },
    #[error("policy ran past its time budget of {budget:?}")]
    Timeout { budget: Duration },
    #[error("policy hit the memory cap of {limit} bytes")]
    MemoryCap { limit: usize },
    #[error("policy trapped: {message}")]
    Trap { message: String },
    #[error("policy answer rejected: {0}")]
    Invalid(#[from] InvalidAnswer),
    /// A scheduler's dry run answered `fail`: made active, it would end its framework.
    #[error("the scheduler would fail its framework: {message}")]
    FailsFramework { message: String },
}

/// Why an answer was rejected by the host's validation.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum InvalidAnswer {
    #[error("the answer's offer lists do not match (agent, framework and resources have {lengths:?} entries; resources needs three per offer)")]
    RaggedOffers { lengths: [usize; 3] },
    #[error("{count} offers for {agents} agents × {frameworks} frameworks")]
    TooManyOffers {
        count: usize,
        agents: usize,
        frameworks: usize,
    },
    #[error("offer {index} names agent {agent}, which is not in the view")]
    UnknownAgent { index: usize, agent: u32 },
    #[error("offer {index} names framework {framework}, which is not in the view")]
    UnknownFramework { index: usize, framework: u32 },
    #[error("offer {index} offers nothing")]
    EmptyOffer { index: usize },
    #[error("agent {agent} is offered to framework {framework} twice")]
    DuplicateOffer { agent: u32, framework: u32 },
    #[error("agent {agent} is offered more than it has free")]
    NotFree { agent: u32 },
    #[error("framework {framework} is suppressed but was offered resources")]
    Suppressed { framework: u32 },
    #[error("framework {framework} filtered agent {agent} but was offered it")]
    Filtered { framework: u32, agent: u32 },
    #[error("decision {index} names offer {offer}, which is not in the view")]
    UnknownOffer { index: usize, offer: u32 },
    #[error("offer {offer} is used by more than one decision")]
    OfferUsedTwice { offer: u32 },
    #[error("launch on offer {offer} has no tasks")]
    EmptyLaunch { offer: u32 },
    #[error("task {task_id:?} is not well formed: {what}")]
    BadTask { task_id: String, what: &'static str },
    #[error("task {task_id:?} is launched twice or exists already")]
    DuplicateTask { task_id: String },
    #[error("launch on offer {offer} needs more resources than the offer has")]
    LaunchTooLarge { offer: u32 },
    #[error("task {task_id:?} needs host ports that offer {offer} does not have free")]
    PortsNotOffered { task_id: String, offer: u32 },
    #[error("decisions both suppress and revive")]
    SuppressAndRevive,
    #[error("kill names task {task_id:?}, which is not a live task of this framework")]
    UnknownTask { task_id: String },
    #[error("decisions both complete and fail the framework")]
    CompleteAndFail,
}

use crate::slot::short;

/// A swap that did not happen; the slot's active policy is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("reading policy file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("policy {} is not a valid component: {message}", short(.digest))]
    Compile { digest: String, message: String },
    #[error("policy {} does not fit the {world} world or imports what the host does not provide: {message}", short(.digest))]
    World {
        digest: String,
        world: &'static str,
        message: String,
    },
    #[error("policy {} failed its dry run on the current view: {source}", short(.digest))]
    DryRun {
        digest: String,
        #[source]
        source: PolicyError,
    },
}
