mod cache_limits;
mod faults;
mod pipeline;
mod ranged;
mod resume;
mod spec;
