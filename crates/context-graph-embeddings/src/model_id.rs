//! The twelve model slots of the embedding pipeline (E1..E12) and their stable names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the twelve embedding models of the pipeline, in pipeline order (E1..E12).
///
/// The string form (`Display`, `FromStr`, serde) is the variant name, e.g. `"Semantic"`; it is
/// what manifests, the CLI and JSON reports use, and it never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ModelId {
    /// E1: dense semantic embeddings.
    Semantic,
    /// E2: recency features, computed in-process.
    TemporalRecent,
    /// E3: periodic time features, computed in-process.
    TemporalPeriodic,
    /// E4: positional time features, computed in-process.
    TemporalPositional,
    /// E5: causal / long-context embeddings.
    Causal,
    /// E6: sparse lexical embeddings.
    Sparse,
    /// E7: code embeddings.
    Code,
    /// E8: graph / relational embeddings.
    Graph,
    /// E9: hyperdimensional computing, computed in-process.
    Hdc,
    /// E10: image and text embeddings.
    Multimodal,
    /// E11: entity embeddings.
    Entity,
    /// E12: late-interaction (ColBERT) embeddings.
    LateInteraction,
}

impl ModelId {
    /// All twelve models in pipeline order.
    pub const ALL: [ModelId; 12] = [
        ModelId::Semantic,
        ModelId::TemporalRecent,
        ModelId::TemporalPeriodic,
        ModelId::TemporalPositional,
        ModelId::Causal,
        ModelId::Sparse,
        ModelId::Code,
        ModelId::Graph,
        ModelId::Hdc,
        ModelId::Multimodal,
        ModelId::Entity,
        ModelId::LateInteraction,
    ];

    /// The stable name, as used in manifests and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelId::Semantic => "Semantic",
            ModelId::TemporalRecent => "TemporalRecent",
            ModelId::TemporalPeriodic => "TemporalPeriodic",
            ModelId::TemporalPositional => "TemporalPositional",
            ModelId::Causal => "Causal",
            ModelId::Sparse => "Sparse",
            ModelId::Code => "Code",
            ModelId::Graph => "Graph",
            ModelId::Hdc => "Hdc",
            ModelId::Multimodal => "Multimodal",
            ModelId::Entity => "Entity",
            ModelId::LateInteraction => "LateInteraction",
        }
    }

    /// The pipeline position, 1 for E1 through 12 for E12.
    pub fn index(self) -> usize {
        ModelId::ALL
            .iter()
            .position(|m| *m == self)
            .map_or(0, |i| i + 1)
    }

    /// Whether the model is computed in-process and has no weights to download.
    pub fn is_custom(self) -> bool {
        matches!(
            self,
            ModelId::TemporalRecent
                | ModelId::TemporalPeriodic
                | ModelId::TemporalPositional
                | ModelId::Hdc
        )
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`ModelId`] from a string that names no model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model `{given}`; known models: {}", ModelId::ALL.map(|m| m.as_str()).join(", "))]
pub struct UnknownModelId {
    /// The text that was given.
    pub given: String,
}

impl FromStr for ModelId {
    type Err = UnknownModelId;

    /// Accepts the stable name (case-insensitive) or the pipeline tag `E1`..`E12`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if let Some(number) = trimmed
            .strip_prefix('E')
            .or_else(|| trimmed.strip_prefix('e'))
            .and_then(|n| n.parse::<usize>().ok())
        {
            if (1..=12).contains(&number) {
                return Ok(ModelId::ALL[number - 1]);
            }
        }
        ModelId::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(trimmed))
            .ok_or_else(|| UnknownModelId {
                given: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_display_fromstr_and_serde() {
        for model in ModelId::ALL {
            assert_eq!(model.as_str().parse::<ModelId>().unwrap(), model);
            assert_eq!(model.to_string(), model.as_str());
            let json = serde_json::to_string(&model).unwrap();
            assert_eq!(json, format!("\"{}\"", model.as_str()));
            assert_eq!(serde_json::from_str::<ModelId>(&json).unwrap(), model);
        }
    }

    #[test]
    fn pipeline_tags_and_case_are_accepted() {
        assert_eq!("E1".parse::<ModelId>().unwrap(), ModelId::Semantic);
        assert_eq!("e12".parse::<ModelId>().unwrap(), ModelId::LateInteraction);
        assert_eq!("entity".parse::<ModelId>().unwrap(), ModelId::Entity);
        assert_eq!(ModelId::Hdc.index(), 9);
        let err = "E13".parse::<ModelId>().unwrap_err();
        assert!(err.to_string().contains("unknown model `E13`"));
        assert!("Semantics".parse::<ModelId>().is_err());
    }

    #[test]
    fn exactly_four_models_are_custom() {
        let custom: Vec<_> = ModelId::ALL.into_iter().filter(|m| m.is_custom()).collect();
        assert_eq!(
            custom,
            [
                ModelId::TemporalRecent,
                ModelId::TemporalPeriodic,
                ModelId::TemporalPositional,
                ModelId::Hdc
            ]
        );
    }
}
