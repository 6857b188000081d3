//! [`ManifestError`], and the turning of TOML and serde errors into it: the
//! dotted path of the field, and the line and column where the parser knows
//! them.

use std::fmt;
use std::path::{Path, PathBuf};

/// A manifest or runtime-config problem, located precisely enough to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// The file the problem is in, as the user named it.
    pub file: PathBuf,
    /// Dotted path of the offending field, e.g. `component.hello.source` or
    /// `trigger.http[2].route`; empty when the problem is not about one field
    /// (e.g. a TOML syntax error or an unreadable file).
    pub field: String,
    /// What is wrong and, where possible, how to fix it. Includes the line
    /// and column when the TOML parser knows them.
    pub message: String,
}

impl ManifestError {
    /// Builds an error; public so that later stages (e.g. rendering templates
    /// at startup) can report problems in the same format.
    pub fn new(
        file: impl Into<PathBuf>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ManifestError {
            file: file.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.field,
                self.message
            )
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

pub(crate) fn syntax_error(file: &Path, text: &str, e: toml::de::Error) -> ManifestError {
    let message = match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!(
                "TOML syntax error at line {line}, column {col}: {}",
                e.message()
            )
        }
        None => format!("TOML syntax error: {}", e.message()),
    };
    ManifestError::new(file, "", message)
}

/// Deserializes `T` from `text`, turning serde errors into [`ManifestError`]s
/// whose field is the dotted path (including an unknown field's own name).
pub(crate) fn deserialize_strict<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
) -> Result<T, ManifestError> {
    let de = toml::Deserializer::parse(text).map_err(|e| syntax_error(file, text, e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut field = e.path().to_string();
        if field == "." {
            field.clear();
        }
        let inner = e.into_inner();
        let mut message = inner.message().to_string();
        if let Some(name) = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split_once('`'))
            .map(|(name, _)| name.to_string())
        {
            // serde_path_to_error usually records the unknown key already.
            if field.rsplit('.').next() != Some(name.as_str()) {
                field = join(&field, &name);
            }
        }
        if let Some(span) = inner.span() {
            let (line, col) = line_col(text, span.start);
            message.push_str(&format!(" (line {line}, column {col})"));
        }
        ManifestError::new(file, field, message)
    })
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
