//! The sentence-embedding model (all-MiniLM-L6-v2) in the process, as
//! `scripts/install-model` installs it (scripts/test runs it first): what
//! it says about meaning, the vectors' shape, and bad directories.

use mosaic::embedding::vectors::{dot, top_k};
use mosaic::embedding::{BATCH, EmbedError, Embedder, MiniLm, default_model_dir};

fn model() -> MiniLm {
    let dir = default_model_dir();
    MiniLm::load(&dir).unwrap_or_else(|e| {
        panic!("{e}\nthe embedding tests need the model: run scripts/install-model (scripts/test does)")
    })
}

fn embed_one(m: &MiniLm, text: &str) -> Vec<f32> {
    m.embed(&[text]).expect("embeds").remove(0)
}

fn assert_unit(v: &[f32]) {
    let norm = dot(v, v).sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
}

#[test]
fn embedding_a_text_is_nearest_to_its_paraphrase() {
    let m = model();
    let query = "How do I reset my password?";
    let texts = [
        "Simmer the tomatoes with garlic and basil for twenty minutes.",
        "Heavy rain and strong winds are expected tomorrow afternoon.",
        "steps to recover a forgotten login credential",
        "Preheat the oven to 200 degrees before baking the bread.",
        "It will be sunny and warm all weekend along the coast.",
    ];
    let q = embed_one(&m, query);
    let vectors = m.embed(&texts).expect("embeds");
    let ranked = top_k(&q, vectors.iter().enumerate().map(|(i, v)| (i, &v[..])), texts.len());
    assert_eq!(texts[ranked[0].0], texts[2], "ranking: {ranked:?}");
    // Not just first: clearly apart from every unrelated text.
    let (paraphrase, next) = (ranked[0].1, ranked[1].1);
    assert!(paraphrase > 0.3 && paraphrase - next > 0.2, "ranking: {ranked:?}");
}

#[test]
fn embedding_matches_an_independent_forward_pass() {
    // The first values of the vector for this text as an independent
    // implementation (a plain numpy BERT forward pass over the same weights
    // and tokens, mean-pooled and normalised) computes them: catches a wrong
    // tokenizer setting, pooling or layer.
    let reference = [
        0.006903, -0.063023, -0.072044, -0.032496, -0.042709, 0.070429, 0.009074, 0.015408,
    ];
    let v = embed_one(&model(), "How do I reset my password?");
    for (i, (got, want)) in v.iter().zip(reference).enumerate() {
        assert!((got - want).abs() < 1e-4, "value {i}: {got} vs {want}");
    }
}

#[test]
fn embedding_vectors_are_unit_length_with_384_dimensions() {
    let m = model();
    assert_eq!(m.dimensions(), 384);
    let vectors = m
        .embed(&["a short one", "Ein deutscher Satz.", "🙂 ünïcödé ✓"])
        .expect("embeds");
    assert_eq!(vectors.len(), 3);
    for v in &vectors {
        assert_eq!(v.len(), 384);
        assert_unit(v);
    }
    assert!(m.embed(&[]).expect("nothing to embed").is_empty());
}

#[test]
fn embedding_is_deterministic_and_independent_of_the_batch() {
    let m = model();
    let text = "The release notes list every breaking change.";
    let alone = embed_one(&m, text);
    assert_eq!(alone, embed_one(&m, text), "the same text gives the same vector");

    // In a batch, a short text is padded to the longest one: the padding
    // must not change its vector. More texts than one batch holds, to
    // cross batch boundaries, each compared with its vector alone.
    let long = "A much longer text, so that the others in its batch are padded. ".repeat(8);
    let mut texts: Vec<String> = (0..BATCH * 2 + 3).map(|i| format!("note number {i}")).collect();
    texts[1] = text.to_string();
    texts[BATCH] = long;
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batched = m.embed(&refs).expect("embeds");
    assert_eq!(batched.len(), texts.len());
    for i in [0, 1, BATCH - 1, BATCH, BATCH + 1, texts.len() - 1] {
        let single = embed_one(&m, refs[i]);
        let apart = single
            .iter()
            .zip(&batched[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(apart < 1e-4, "text {i} differs by {apart} in a batch");
    }
}

#[test]
fn embedding_an_empty_or_huge_text_does_not_fail() {
    let m = model();
    // 100 KB: cut at 256 tokens; a text of one 100 KB word (no separators).
    let huge = "word after word, sentence after sentence. ".repeat(2_500);
    let one_word = "x".repeat(100_000);
    let vectors = m
        .embed(&["", huge.as_str(), one_word.as_str(), "\0\u{1}\u{feff}"])
        .expect("embeds");
    assert_eq!(vectors.len(), 4);
    for v in &vectors {
        assert_eq!(v.len(), 384);
        assert_unit(v);
    }
    // Only the first 256 tokens count: a text and that text with 90 KB
    // more after it are the same to the model.
    let with_tail = format!("{huge}{}", "unrelated tail about cooking pasta. ".repeat(2_500));
    let tailed = embed_one(&m, &with_tail);
    assert!(dot(&tailed, &vectors[1]) > 0.9999);
}

#[test]
fn embedding_model_missing_or_corrupt_is_refused_naming_the_file() {
    let missing = std::env::temp_dir().join("mosaic-no-such-model-dir");
    let err = MiniLm::load(&missing).err().expect("a missing dir does not load");
    assert!(
        matches!(&err, EmbedError::Model { path, .. } if path == &missing.display().to_string()),
        "{err}"
    );

    let installed = default_model_dir();
    let copy = |dir: &std::path::Path, file: &str| {
        std::fs::copy(installed.join(file), dir.join(file))
            .unwrap_or_else(|e| panic!("{e}: run scripts/install-model to install the model"));
    };
    let refused = |dir: &std::path::Path, file: &str| {
        let err = MiniLm::load(dir).err().expect("a broken dir does not load");
        let expected = dir.join(file).display().to_string();
        assert!(
            matches!(&err, EmbedError::Model { path, .. } if *path == expected),
            "{file}: {err}"
        );
    };

    // Each file missing in turn, then each one present but not what it should be.
    let dir = tempfile::tempdir().expect("tempdir");
    refused(dir.path(), "config.json");
    copy(dir.path(), "config.json");
    refused(dir.path(), "tokenizer.json");
    copy(dir.path(), "tokenizer.json");
    refused(dir.path(), "model.safetensors");

    std::fs::write(dir.path().join("model.safetensors"), b"not safetensors").expect("write");
    refused(dir.path(), "model.safetensors");
    // Cut short: the header promises more bytes than there are.
    let weights = std::fs::read(installed.join("model.safetensors")).expect("installed weights");
    std::fs::write(dir.path().join("model.safetensors"), &weights[..weights.len() / 2]).expect("write");
    refused(dir.path(), "model.safetensors");

    std::fs::write(dir.path().join("tokenizer.json"), b"{\"not\": \"a tokenizer\"}").expect("write");
    refused(dir.path(), "tokenizer.json");
    std::fs::write(dir.path().join("config.json"), b"[1, 2]").expect("write");
    refused(dir.path(), "config.json");
}
