//! First-fit scheduler: each pending task, in order, goes on the first offer that still
//! has room for it (resources and host ports). Offers left unused are declined for five
//! seconds; with nothing pending, the framework suppresses itself; a task that failed or
//! was lost revives it, so that the host's retry gets offers again.

wit_bindgen::generate!({ path: "../../wit", world: "scheduler", generate_all });

mod place {
    include!("../../shared/place.rs");
}

struct FirstFit;

impl Guest for FirstFit {
    fn schedule(view: SchedulerView) -> Vec<Decision> {
        place::schedule(view, place::Choice::FirstFit)
    }

    fn status(_view: SchedulerView, update: TaskStatus) -> Vec<Decision> {
        place::on_status(&update)
    }
}

export!(FirstFit);
