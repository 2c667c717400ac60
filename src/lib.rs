//! ripcord: an alert-to-rollback responder for staged cloud-host upgrades.
//!
//! Data flows through one module per stage:
//! `source` -> [`decode`] -> [`window`] -> [`rule`] -> [`engine`]
//! (incidents and [`decision`]s) -> `action` -> `journal`.
//! The engine is pure (event time only, no I/O), so replay, the live
//! responder and the tests all run the same code.

pub mod action;
pub mod alertmanager;
pub mod api;
pub mod app;
pub mod cases;
pub mod config;
pub mod console;
pub mod decision;
pub mod decode;
pub mod demo;
pub mod drill;
pub mod engine;
pub mod event;
pub mod gate;
pub mod health;
pub mod journal;
pub mod limits;
pub mod output;
pub mod pipeline;
pub mod replay;
pub mod report;
pub mod router;
pub mod rule;
pub mod server;
pub mod settings;
pub mod silence;
pub mod source;
pub mod telemetry;
pub mod text;
pub mod time;
pub mod window;
