mod cache_limits;
mod faults;
mod pipeline;
mod ranged;
mod read_only;
mod resume;
mod spec;
