//! Folder trees: the firm's templates ([`template`], [`templates`]), each
//! client's folders ([`folders`]) and drawing them ([`render`]).

pub mod folders;
pub mod render;
pub mod template;
pub mod templates;

pub use template::{TemplateError, TreeTemplate};
