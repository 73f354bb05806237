pub mod cluster;
pub mod common;
pub mod redis_server;
