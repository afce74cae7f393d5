//! Closed vocabularies: each is an enum stored, serialized and shown as one snake_case
//! word, parsed back with `FromStr` (an unknown word is a usage error that lists the
//! allowed ones).

use lifeboat_core::Error;

/// The error for `value`, which is not among the `allowed` words of `what`.
pub(crate) fn unknown_word(what: &str, value: &str, allowed: &[&str]) -> Error {
    Error::usage(format!(
        "{what} {value:?} is not one of: {}",
        allowed.join(", ")
    ))
}

/// `vocabulary! { /// doc  pub enum Name("what it is called in messages") { Variant =
/// "word", … } }`: the enum with serde (snake_case), `ALL`, `as_str`, `FromStr` and
/// `Display` (which honours width and alignment, like a string). The words must be the
/// variants' names in snake_case: serde writes those, and the tests hold them equal.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident($what:literal) {
            $($(#[$variant_meta:meta])* $variant:ident = $word:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize,
            serde::Deserialize,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every word, in order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = lifeboat_core::Error;

            fn from_str(value: &str) -> std::result::Result<$name, lifeboat_core::Error> {
                match value {
                    $($word => Ok($name::$variant),)+
                    _ => Err($crate::words::unknown_word($what, value, &[$($word),+])),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

pub(crate) use vocabulary;

#[cfg(test)]
mod tests {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use lifeboat_core::ErrorKind;

    use crate::{ApplyStatus, ComponentStatus, Impact, IncidentStatus, Stage};

    /// Every word: serde writes and reads it, `Display` shows it, `FromStr` parses it back;
    /// an unknown word is a usage error that lists them all.
    fn round_trip<T>(all: &[T], what: &str, words: &[&str])
    where
        T: Copy + PartialEq + std::fmt::Debug + Serialize + DeserializeOwned + Display,
        T: FromStr<Err = lifeboat_core::Error>,
    {
        assert_eq!(all.len(), words.len());
        for (value, word) in all.iter().zip(words) {
            assert_eq!(
                serde_json::to_value(value).expect("serialize"),
                serde_json::json!(word)
            );
            assert_eq!(
                serde_json::from_value::<T>(serde_json::json!(word)).expect("deserialize"),
                *value
            );
            assert_eq!(value.to_string(), *word);
            assert_eq!(word.parse::<T>().expect("parse"), *value);
        }
        let e = "Bogus".parse::<T>().expect_err("an unknown word");
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert_eq!(
            e.message(),
            format!("{what} \"Bogus\" is not one of: {}", words.join(", "))
        );
    }

    #[test]
    fn every_vocabulary_has_its_words() {
        round_trip(
            Stage::ALL,
            "stage",
            &[
                "queued",
                "restoring",
                "verifying",
                "awaiting_acceptance",
                "restored",
                "failed",
            ],
        );
        round_trip(
            ApplyStatus::ALL,
            "apply state",
            &["running", "halted", "diverged", "done", "undone"],
        );
        round_trip(
            IncidentStatus::ALL,
            "incident status",
            &[
                "investigating",
                "identified",
                "monitoring",
                "resolved",
                "postmortem",
            ],
        );
        round_trip(
            Impact::ALL,
            "impact",
            &["none", "minor", "major", "critical"],
        );
        round_trip(
            ComponentStatus::ALL,
            "component status",
            &[
                "operational",
                "degraded_performance",
                "partial_outage",
                "major_outage",
                "under_maintenance",
            ],
        );
    }

    #[test]
    fn display_pads_like_a_string() {
        assert_eq!(
            format!("{:<13}|", IncidentStatus::Resolved),
            "resolved     |"
        );
        assert_eq!(format!("{:>6}|", Impact::None), "  none|");
    }
}
