mod cache_limits;
mod faults;
mod pipeline;
mod resume;
mod spec;
