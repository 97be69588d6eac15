mod cache_limits;
mod faults;
mod file_sets;
mod pipeline;
mod ranged;
mod resume;
mod spec;
