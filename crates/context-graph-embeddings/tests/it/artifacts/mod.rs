mod cache_limits;
mod faults;
mod ops;
mod pipeline;
mod ranged;
mod resume;
mod spec;
