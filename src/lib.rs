//! ripcord: an alert-to-rollback responder for staged cloud-host upgrades.
//!
//! Data flows through one module per stage:
//! `source` -> [`decode`] -> [`window`] -> [`rule`] -> [`engine`]
//! (incidents and decisions) -> `action` -> `journal`.
//! The engine is pure (event time only, no I/O), so replay, the live
//! responder and the tests all run the same code.

pub mod decode;
pub mod event;
pub mod time;
pub mod window;
