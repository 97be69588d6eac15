mod cache_limits;
mod example;
mod faults;
mod pipeline;
mod ranged;
mod resume;
mod spec;
