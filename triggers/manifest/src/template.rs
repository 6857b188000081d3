//! Spin's `{{ name }}` string templates.

use std::fmt;

use crate::names::is_snake_id;

/// Why a template could not be parsed or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{{` has no matching `}}`.
    #[error("unclosed '{{{{' in template `{template}`")]
    Unclosed {
        /// The whole template.
        template: String,
    },
    /// The text between the braces is not a valid variable name.
    #[error("invalid variable reference '{{{{ {name} }}}}': names must be lowercase letters, digits and '_', starting with a letter")]
    InvalidName {
        /// The text between the braces, trimmed.
        name: String,
    },
    /// `render` found no value for a referenced variable.
    #[error("no value for variable `{name}`")]
    MissingVariable {
        /// The variable without a value.
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Variable(String),
}

/// A string that may reference application variables as `{{ name }}`.
///
/// Spin uses these in component `variables` and `allowed_outbound_hosts`; they
/// are parsed when the manifest loads so that typos surface early, and
/// rendered when values are known (at startup or per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    raw: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `s`. Whitespace inside the braces is allowed (`{{name}}` and
    /// `{{ name }}` are the same); an unclosed `{{` is an error; a lone `}}`
    /// is literal text.
    pub fn parse(s: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err(TemplateError::Unclosed {
                    template: s.to_string(),
                });
            };
            let name = after[..end].trim();
            if !is_snake_id(name) {
                return Err(TemplateError::InvalidName {
                    name: name.to_string(),
                });
            }
            parts.push(Part::Variable(name.to_string()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Template {
            raw: s.to_string(),
            parts,
        })
    }

    /// The referenced variable names, in order of appearance (repeats kept).
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Variable(v) => Some(v.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Substitutes every variable using `lookup`; the first variable it has no
    /// value for is reported.
    pub fn render(
        &self,
        mut lookup: impl FnMut(&str) -> Option<String>,
    ) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(self.raw.len());
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Variable(v) => match lookup(v) {
                    Some(value) => out.push_str(&value),
                    None => return Err(TemplateError::MissingVariable { name: v.clone() }),
                },
            }
        }
        Ok(out)
    }

    /// True when the template references no variable, so its text is final.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl std::str::FromStr for Template {
    type Err = TemplateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Template::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for Template {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Template::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(t: &Template) -> Vec<&str> {
        t.variables().collect()
    }

    #[test]
    fn literal() {
        let t = Template::parse("plain } text }}").unwrap();
        assert!(t.is_literal());
        assert_eq!(t.render(|_| None).unwrap(), "plain } text }}");
        assert_eq!(t.to_string(), "plain } text }}");
        assert!(Template::parse("").unwrap().is_literal());
    }

    #[test]
    fn variables_with_and_without_spaces() {
        let t = Template::parse("https://{{ host }}:{{port}}/{{  host  }}").unwrap();
        assert!(!t.is_literal());
        assert_eq!(vars(&t), ["host", "port", "host"]);
        let out = t
            .render(|n| Some(if n == "host" { "h".into() } else { "1".into() }))
            .unwrap();
        assert_eq!(out, "https://h:1/h");
    }

    #[test]
    fn missing_variable_is_named() {
        let t = Template::parse("{{ a }}-{{ b }}").unwrap();
        let err = t
            .render(|n| (n == "a").then(|| "x".to_string()))
            .unwrap_err();
        assert_eq!(err, TemplateError::MissingVariable { name: "b".into() });
        assert_eq!(err.to_string(), "no value for variable `b`");
    }

    #[test]
    fn unclosed_is_an_error() {
        let err = Template::parse("abc {{ name").unwrap_err();
        assert_eq!(
            err,
            TemplateError::Unclosed {
                template: "abc {{ name".into()
            }
        );
        assert_eq!(err.to_string(), "unclosed '{{' in template `abc {{ name`");
        assert!(Template::parse("{{ a }} {{").is_err());
    }

    #[test]
    fn invalid_names_are_errors() {
        for (t, name) in [
            ("{{}}", ""),
            ("{{ Foo }}", "Foo"),
            ("{{ a-b }}", "a-b"),
            ("{{ 1a }}", "1a"),
            ("{{ a b }}", "a b"),
        ] {
            assert_eq!(
                Template::parse(t).unwrap_err(),
                TemplateError::InvalidName { name: name.into() },
                "{t}"
            );
        }
        assert!(Template::parse("{{ Foo }}")
            .unwrap_err()
            .to_string()
            .contains("'{{ Foo }}'"));
    }
}
