//! Bin-pack scheduler: each pending task, in order, goes on the offer it leaves with the
//! least room (best fit, so that whole agents stay free for large tasks). Otherwise as
//! first-fit. Built for `wasm32-wasip2`: it runs under the host's deny-all WASI context.

wit_bindgen::generate!({ path: "../../wit", world: "scheduler", generate_all });

mod place {
    include!("../../shared/place.rs");
}

struct BinPack;

impl Guest for BinPack {
    fn schedule(view: SchedulerView) -> Vec<Decision> {
        place::schedule(view, place::Choice::BestFit)
    }

    fn status(_view: SchedulerView, update: TaskStatus) -> Vec<Decision> {
        place::on_status(&update)
    }
}

export!(BinPack);
