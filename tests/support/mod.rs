pub mod cluster;
pub mod common;
pub mod pools;
pub mod python;
pub mod redis_server;
