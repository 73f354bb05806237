pub mod cluster;
pub mod common;
pub mod events;
pub mod netns;
pub mod pools;
pub mod python;
pub mod redis_server;
