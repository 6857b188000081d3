//! `[variables]`: the application variables, and the check that a template
//! refers only to defined ones.

use std::collections::BTreeMap;
use std::path::Path;

use crate::names::{is_snake_id, SNAKE_RULE};
use crate::{raw, ManifestError, Template};

/// An application variable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variable {
    /// Value used when no provider supplies one.
    pub default: Option<String>,
    /// The app must not start without a value.
    pub required: bool,
    /// The value must not be logged or shown.
    pub secret: bool,
}

/// Validates the manifest's `[variables]`; `path` names the manifest in
/// errors.
pub(crate) fn parse_variables(
    raw: BTreeMap<String, raw::RawVariable>,
    path: &Path,
) -> Result<BTreeMap<String, Variable>, ManifestError> {
    let err = |field: &str, message: String| ManifestError::new(path, field, message);
    let mut variables = BTreeMap::new();
    for (name, v) in raw {
        let field = format!("variables.{name}");
        if !is_snake_id(&name) {
            return Err(err(
                &field,
                format!("invalid variable name `{name}`: {SNAKE_RULE}"),
            ));
        }
        if v.required && v.default.is_some() {
            return Err(err(
                &field,
                "a variable cannot have both a `default` and `required = true`".into(),
            ));
        }
        variables.insert(
            name,
            Variable {
                default: v.default,
                required: v.required,
                secret: v.secret,
            },
        );
    }
    Ok(variables)
}

/// The error message for the first variable `template` refers to that is
/// not among the application `variables`; `None` when all are defined.
pub(crate) fn undefined_var(
    variables: &BTreeMap<String, Variable>,
    template: &Template,
) -> Option<String> {
    template
        .variables()
        .find(|v| !variables.contains_key(*v))
        .map(|v| {
            format!("`{{{{ {v} }}}}` refers to an undefined application variable; declare `{v}` in [variables]")
        })
}
