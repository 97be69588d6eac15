mod cache_limits;
mod example;
mod faults;
mod ops;
mod pipeline;
mod ranged;
mod resume;
mod spec;
