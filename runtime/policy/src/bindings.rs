//! Host bindings generated from `wit/policy.wit`.
#![allow(missing_docs, clippy::all, unsafe_code)]

pub mod allocator {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "allocator",
        additional_derives: [PartialEq],
    });
}

pub mod scheduler {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "scheduler",
        with: {
            "corral:policy/types": crate::bindings::allocator::corral::policy::types,
            "corral:policy/log": crate::bindings::allocator::corral::policy::log,
        },
    });
}
