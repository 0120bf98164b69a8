//! The Kubernetes object model that Axle serves, independent of HTTP and storage.
//!
//! Objects travel through Axle as `serde_json::Value` (as "unstructured" objects do in the
//! upstream API server): one generic path serves built-in kinds and custom resources alike.
//! What makes a kind special lives here, as data and small pure functions:
//! - [`resource`]: the resource types (group, version, kind, plural, scope, verbs) and the registry
//!   that maps request paths and kinds to them, including types defined by CRDs;
//! - [`error`]: `ApiError`, which renders as a Kubernetes `Status` object;
//! - [`meta`]: metadata rules (names, uids, timestamps, owner references);
//! - [`selector`]: label and field selectors;
//! - [`defaults`] and [`validation`]: admission-time defaulting and validation of built-in kinds;
//! - [`schema`]: OpenAPI v3 structural-schema checks (unknown fields, types) for CRs and strict mode;
//! - [`table`]: the `meta.k8s.io/v1 Table` rows that `kubectl get` prints;
//! - [`dependencies`]: the `axle.dev/depends-on` annotation grammar;
//! - [`firmware`]: how a firmware pod reports flash progress;
//! - [`rbac`]: users, request attributes and the evaluation of RBAC rules and bindings.
//!
//! This crate does no I/O and knows nothing about HTTP or the store.

pub mod batch;
pub mod defaults;
pub mod dependencies;
pub mod error;
pub mod firmware;
pub mod meta;
pub mod quantity;
pub mod rbac;
pub mod resource;
pub mod schema;
pub mod selector;
pub mod table;
pub mod validation;

pub use error::{ApiError, Cause};
pub use resource::{Registry, ResourceType, Scope};
