//! Message filters: a pipeline of checks each message goes through before
//! it is stored, configured in `[filters]` (with `[[filters.rooms]]`
//! overrides for rooms matching a pattern).
//!
//! Built in: maximum length, a word list that masks or rejects, a link
//! policy (allow / strip / reject) and repeated-message suppression. A
//! deployer adds a filter of their own by implementing [`MessageFilter`]
//! and handing it to `chatup::worker::run_with_filters` (see
//! `sidecar/examples/custom_filter.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatup_wire::room_matches;
use serde::Deserialize;

/// A message on its way through the filters.
#[derive(Debug)]
pub struct Candidate<'a> {
    pub room: &'a str,
    pub user: &'a str,
    /// The text; a filter may rewrite it (masking, stripping).
    pub text: String,
}

/// A filter's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on (with the text as the filter left it).
    Pass,
    /// Refuse the message: `422 {"error": "message rejected", "reason": ...}`.
    Reject(String),
}

/// One step of the pipeline. Filters run on the worker's request path for
/// every message: keep them fast and never block.
pub trait MessageFilter: Send + Sync {
    /// A short name, for logs.
    fn name(&self) -> &str;
    fn check(&self, message: &mut Candidate<'_>) -> Verdict;
}

/// What happens to a message containing a listed word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WordAction {
    /// Replace the word's letters with `*`.
    Mask,
    Reject,
}

/// What happens to links (`http://`, `https://`, `www.`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkPolicy {
    Allow,
    /// Remove them (a message of nothing but links is rejected).
    Strip,
    Reject,
}

/// The settings of the built-in filters for one room.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterSettings {
    /// Longest message in characters; 0: no limit beyond the module's.
    pub max_length: usize,
    /// Words (case-insensitive, whole words).
    pub words: Vec<String>,
    pub words_action: WordAction,
    pub links: LinkPolicy,
    /// The same text from the same user in the same room within this many
    /// seconds is rejected; 0: off.
    pub repeat_window_secs: u64,
}

impl Default for FilterSettings {
    fn default() -> Self {
        Self {
            max_length: 0,
            words: Vec::new(),
            words_action: WordAction::Mask,
            links: LinkPolicy::Allow,
            repeat_window_secs: 0,
        }
    }
}

/// Settings for the rooms matching a pattern: each given field replaces
/// the global one.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomFilterSettings {
    /// A room name, or a prefix followed by `*`.
    pub pattern: String,
    pub max_length: Option<usize>,
    pub words: Option<Vec<String>>,
    pub words_action: Option<WordAction>,
    pub links: Option<LinkPolicy>,
    pub repeat_window_secs: Option<u64>,
}

/// `[filters]` in the worker's configuration: the settings of every room,
/// and overrides for the rooms matching a pattern (the first match).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    pub max_length: usize,
    pub words: Vec<String>,
    pub words_action: WordAction,
    pub links: LinkPolicy,
    pub repeat_window_secs: u64,
    pub rooms: Vec<RoomFilterSettings>,
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self::from_global(FilterSettings::default())
    }
}

impl FilterConfig {
    /// The same settings for every room.
    pub fn from_global(settings: FilterSettings) -> Self {
        Self {
            max_length: settings.max_length,
            words: settings.words,
            words_action: settings.words_action,
            links: settings.links,
            repeat_window_secs: settings.repeat_window_secs,
            rooms: Vec::new(),
        }
    }

    fn global(&self) -> FilterSettings {
        FilterSettings {
            max_length: self.max_length,
            words: self.words.clone(),
            words_action: self.words_action,
            links: self.links,
            repeat_window_secs: self.repeat_window_secs,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        for room in &self.rooms {
            chatup_wire::validate_room_pattern(&room.pattern)
                .map_err(|e| format!("filters.rooms: pattern \"{}\": {e}", room.pattern))?;
        }
        Ok(())
    }
}

impl RoomFilterSettings {
    fn over(&self, global: &FilterSettings) -> FilterSettings {
        FilterSettings {
            max_length: self.max_length.unwrap_or(global.max_length),
            words: self.words.clone().unwrap_or_else(|| global.words.clone()),
            words_action: self.words_action.unwrap_or(global.words_action),
            links: self.links.unwrap_or(global.links),
            repeat_window_secs: self.repeat_window_secs.unwrap_or(global.repeat_window_secs),
        }
    }
}

type Chain = Vec<Arc<dyn MessageFilter>>;

/// The filters of every room: the built-in ones from the configuration,
/// then the deployer's own.
pub struct FilterPipeline {
    global: Chain,
    rooms: Vec<(String, Chain)>,
}

impl FilterPipeline {
    pub fn new(config: &FilterConfig, extra: Vec<Arc<dyn MessageFilter>>) -> Self {
        let chain = |settings: &FilterSettings| {
            let mut chain = built_in(settings);
            chain.extend(extra.iter().cloned());
            chain
        };
        let global = config.global();
        Self {
            rooms: config
                .rooms
                .iter()
                .map(|room| (room.pattern.clone(), chain(&room.over(&global))))
                .collect(),
            global: chain(&global),
        }
    }

    /// Runs `message` through its room's filters, in order, until one
    /// rejects it.
    pub fn check(&self, message: &mut Candidate<'_>) -> Verdict {
        let chain = self
            .rooms
            .iter()
            .find(|(pattern, _)| room_matches(pattern, message.room))
            .map_or(&self.global, |(_, chain)| chain);
        for filter in chain {
            if let Verdict::Reject(reason) = filter.check(message) {
                tracing::debug!(
                    filter = filter.name(),
                    room = message.room,
                    reason,
                    "message rejected"
                );
                return Verdict::Reject(reason);
            }
        }
        Verdict::Pass
    }
}

fn built_in(settings: &FilterSettings) -> Chain {
    let mut chain: Chain = Vec::new();
    if settings.max_length > 0 {
        chain.push(Arc::new(MaxLength(settings.max_length)));
    }
    if !settings.words.is_empty() {
        chain.push(Arc::new(WordList::new(
            &settings.words,
            settings.words_action,
        )));
    }
    if settings.links != LinkPolicy::Allow {
        chain.push(Arc::new(Links(settings.links)));
    }
    if settings.repeat_window_secs > 0 {
        chain.push(Arc::new(RepeatSuppression::new(Duration::from_secs(
            settings.repeat_window_secs,
        ))));
    }
    chain
}

pub struct MaxLength(pub usize);

impl MessageFilter for MaxLength {
    fn name(&self) -> &str {
        "max_length"
    }

    fn check(&self, message: &mut Candidate<'_>) -> Verdict {
        if message.text.chars().count() > self.0 {
            Verdict::Reject(format!("longer than {} characters", self.0))
        } else {
            Verdict::Pass
        }
    }
}

pub struct WordList {
    words: HashSet<String>,
    action: WordAction,
}

impl WordList {
    pub fn new(words: &[String], action: WordAction) -> Self {
        Self {
            words: words.iter().map(|w| w.to_lowercase()).collect(),
            action,
        }
    }
}

/// The byte ranges of the words (runs of letters and digits) of `text`.
fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}

impl MessageFilter for WordList {
    fn name(&self) -> &str {
        "words"
    }

    fn check(&self, message: &mut Candidate<'_>) -> Verdict {
        let listed: Vec<(usize, usize)> = word_spans(&message.text)
            .into_iter()
            .filter(|&(s, e)| self.words.contains(&message.text[s..e].to_lowercase()))
            .collect();
        if listed.is_empty() {
            return Verdict::Pass;
        }
        if self.action == WordAction::Reject {
            return Verdict::Reject("contains a forbidden word".into());
        }
        let mut masked = String::with_capacity(message.text.len());
        let mut at = 0;
        for (s, e) in listed {
            masked.push_str(&message.text[at..s]);
            masked.extend(message.text[s..e].chars().map(|_| '*'));
            at = e;
        }
        masked.push_str(&message.text[at..]);
        message.text = masked;
        Verdict::Pass
    }
}

pub struct Links(pub LinkPolicy);

fn is_link(token: &str) -> bool {
    let lower = token.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("www.")
}

impl MessageFilter for Links {
    fn name(&self) -> &str {
        "links"
    }

    fn check(&self, message: &mut Candidate<'_>) -> Verdict {
        if !message.text.split_whitespace().any(is_link) {
            return Verdict::Pass;
        }
        match self.0 {
            LinkPolicy::Allow => Verdict::Pass,
            LinkPolicy::Reject => Verdict::Reject("links are not allowed".into()),
            LinkPolicy::Strip => {
                let kept: Vec<&str> = message
                    .text
                    .split_whitespace()
                    .filter(|token| !is_link(token))
                    .collect();
                if kept.is_empty() {
                    return Verdict::Reject("links are not allowed".into());
                }
                message.text = kept.join(" ");
                Verdict::Pass
            }
        }
    }
}

pub struct RepeatSuppression {
    window: Duration,
    last: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl RepeatSuppression {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            last: Mutex::new(HashMap::new()),
        }
    }
}

impl MessageFilter for RepeatSuppression {
    fn name(&self) -> &str {
        "repeat"
    }

    fn check(&self, message: &mut Candidate<'_>) -> Verdict {
        let now = Instant::now();
        let normalized = message.text.trim().to_lowercase();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() > 100_000 {
            last.retain(|_, (_, at)| now.duration_since(*at) < self.window);
        }
        let key = (message.room.to_owned(), message.user.to_owned());
        if let Some((text, at)) = last.get(&key) {
            if *text == normalized && now.duration_since(*at) < self.window {
                return Verdict::Reject("repeated message".into());
            }
        }
        last.insert(key, (normalized, now));
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pipeline: &FilterPipeline, room: &str, text: &str) -> (Verdict, String) {
        let mut message = Candidate {
            room,
            user: "u",
            text: text.into(),
        };
        let verdict = pipeline.check(&mut message);
        (verdict, message.text)
    }

    fn config(global: FilterSettings) -> FilterConfig {
        FilterConfig::from_global(global)
    }

    #[test]
    fn max_length_rejects_longer_messages() {
        let pipeline = FilterPipeline::new(
            &config(FilterSettings {
                max_length: 5,
                ..Default::default()
            }),
            vec![],
        );
        assert_eq!(run(&pipeline, "r", "héllo").0, Verdict::Pass);
        assert_eq!(
            run(&pipeline, "r", "hello!").0,
            Verdict::Reject("longer than 5 characters".into())
        );
    }

    #[test]
    fn listed_words_are_masked_whole_and_case_insensitively_or_rejected() {
        let words = vec!["darn".to_string()];
        let masking = FilterPipeline::new(
            &config(FilterSettings {
                words: words.clone(),
                ..Default::default()
            }),
            vec![],
        );
        assert_eq!(
            run(&masking, "r", "Darn it, darned DARN!"),
            (Verdict::Pass, "**** it, darned ****!".to_string())
        );
        let rejecting = FilterPipeline::new(
            &config(FilterSettings {
                words,
                words_action: WordAction::Reject,
                ..Default::default()
            }),
            vec![],
        );
        assert_eq!(
            run(&rejecting, "r", "oh darn").0,
            Verdict::Reject("contains a forbidden word".into())
        );
        assert_eq!(run(&rejecting, "r", "darned").0, Verdict::Pass);
    }

    #[test]
    fn links_are_allowed_stripped_or_rejected() {
        let with = |links| {
            FilterPipeline::new(
                &config(FilterSettings {
                    links,
                    ..Default::default()
                }),
                vec![],
            )
        };
        let text = "see https://x.example now";
        assert_eq!(run(&with(LinkPolicy::Allow), "r", text).1, text);
        assert_eq!(
            run(&with(LinkPolicy::Strip), "r", text),
            (Verdict::Pass, "see now".to_string())
        );
        assert!(matches!(
            run(&with(LinkPolicy::Strip), "r", "www.x.example").0,
            Verdict::Reject(_)
        ));
        assert_eq!(
            run(&with(LinkPolicy::Reject), "r", text).0,
            Verdict::Reject("links are not allowed".into())
        );
    }

    #[test]
    fn a_repeated_message_is_rejected_within_the_window() {
        let pipeline = FilterPipeline::new(
            &config(FilterSettings {
                repeat_window_secs: 60,
                ..Default::default()
            }),
            vec![],
        );
        assert_eq!(run(&pipeline, "r", "Hello").0, Verdict::Pass);
        assert_eq!(
            run(&pipeline, "r", "hello ").0,
            Verdict::Reject("repeated message".into())
        );
        assert_eq!(run(&pipeline, "r", "something else").0, Verdict::Pass);
        assert_eq!(run(&pipeline, "other", "something else").0, Verdict::Pass);
    }

    #[test]
    fn room_overrides_replace_global_settings_and_extra_filters_run_everywhere() {
        struct NoShouting;
        impl MessageFilter for NoShouting {
            fn name(&self) -> &str {
                "no_shouting"
            }
            fn check(&self, message: &mut Candidate<'_>) -> Verdict {
                if message.text.chars().any(char::is_lowercase) {
                    Verdict::Pass
                } else {
                    Verdict::Reject("no shouting".into())
                }
            }
        }
        let config = FilterConfig {
            rooms: vec![RoomFilterSettings {
                pattern: "kids-*".into(),
                links: Some(LinkPolicy::Reject),
                ..Default::default()
            }],
            ..Default::default()
        };
        let pipeline = FilterPipeline::new(&config, vec![Arc::new(NoShouting)]);
        assert_eq!(
            run(&pipeline, "lobby", "see www.x.example").0,
            Verdict::Pass
        );
        assert!(matches!(
            run(&pipeline, "kids-1", "see www.x.example").0,
            Verdict::Reject(_)
        ));
        assert_eq!(
            run(&pipeline, "lobby", "HEY").0,
            Verdict::Reject("no shouting".into())
        );
        assert_eq!(
            run(&pipeline, "kids-1", "HEY").0,
            Verdict::Reject("no shouting".into())
        );
    }
}
