//! all-MiniLM-L6-v2 on the CPU: a 6-layer BERT (candle) whose token vectors
//! are mean-pooled over the attention mask and L2-normalised, as the model
//! was trained to be used (sentence-transformers' pooling config).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Encoding, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::{EmbedError, Embedder};

/// Tokens per text, [CLS] and [SEP] included; the rest is cut (the model
/// was trained on 256: sentence_bert_config.json's max_seq_length).
pub const MAX_TOKENS: usize = 256;

/// Texts per forward pass: bounds the activations' memory whatever the
/// caller passes. Measured (benches/embedding.rs) with 1 KB texts: peak RSS
/// 218 MiB at 8 against 538 MiB at 32, for the same texts/s; short texts
/// lose a quarter of their throughput at 8.
pub const BATCH: usize = 8;

/// Bytes of a text given to the tokenizer. 256 tokens never need more
/// (a WordPiece token is at most 100 characters, and separators are few),
/// and tokenising the rest of a long document would only be thrown away.
const MAX_TEXT_BYTES: usize = 32 * 1024;

/// The files `scripts/install-model` puts in the model directory.
const CONFIG: &str = "config.json";
const TOKENIZER: &str = "tokenizer.json";
const WEIGHTS: &str = "model.safetensors";

pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    dimensions: usize,
}

impl MiniLm {
    /// Whether `dir` holds any of the model's files: an empty or missing
    /// directory means no model; a partial or broken one is an error to load.
    pub fn present(dir: &Path) -> bool {
        [CONFIG, TOKENIZER, WEIGHTS].iter().any(|f| dir.join(f).exists())
    }

    /// Loads the model from `dir` (see `default_model_dir`). A missing or
    /// unreadable directory or file is `EmbedError::Model` naming it.
    pub fn load(dir: &Path) -> Result<MiniLm, EmbedError> {
        let bad = |file: &str, reason: String| EmbedError::Model {
            path: dir.join(file).display().to_string(),
            reason,
        };
        if !dir.is_dir() {
            return Err(EmbedError::Model {
                path: dir.display().to_string(),
                reason: "no such directory (scripts/install-model installs the model)".into(),
            });
        }
        let read = |file: &str| std::fs::read(dir.join(file)).map_err(|e| bad(file, e.to_string()));

        let config: Config =
            serde_json::from_slice(&read(CONFIG)?).map_err(|e| bad(CONFIG, format!("not a BERT config: {e}")))?;

        let mut tokenizer = Tokenizer::from_bytes(read(TOKENIZER)?).map_err(|e| bad(TOKENIZER, e.to_string()))?;
        // The file pads every text to 128 and cuts there; pad a batch to its
        // longest text instead, and cut at the length the model was trained on.
        let padding = PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..tokenizer.get_padding().cloned().unwrap_or_default()
        };
        tokenizer.with_padding(Some(padding));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| bad(TOKENIZER, e.to_string()))?;

        // Read into memory rather than mapped: safe code, and the buffer is
        // dropped once the tensors are built from it.
        let vb = VarBuilder::from_buffered_safetensors(read(WEIGHTS)?, DType::F32, &Device::Cpu)
            .map_err(|e| bad(WEIGHTS, e.to_string()))?;
        let model = BertModel::load(vb, &config).map_err(|e| bad(WEIGHTS, e.to_string()))?;

        Ok(MiniLm {
            model,
            tokenizer,
            dimensions: config.hidden_size,
        })
    }

    /// One forward pass over at most `BATCH` texts.
    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let inputs: Vec<&str> = texts.iter().map(|t| prefix(t, MAX_TEXT_BYTES)).collect();
        let encodings = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| EmbedError::Inference(format!("tokenizer: {e}")))?;
        let rows = encodings.len();
        let len = encodings.first().map_or(0, |e| e.len());
        let flat =
            |f: fn(&Encoding) -> &[u32]| -> Vec<u32> { encodings.iter().flat_map(|e| f(e).iter().copied()).collect() };
        let device = &self.model.device;
        let ids = Tensor::from_vec(flat(Encoding::get_ids), (rows, len), device)?;
        let mask = Tensor::from_vec(flat(Encoding::get_attention_mask), (rows, len), device)?;
        let token_types = ids.zeros_like()?;

        let tokens = self.model.forward(&ids, &token_types, Some(&mask))?; // (rows, len, dims)
        // Mean over the real tokens only: padding is masked out of the sum
        // and the count ([CLS] and [SEP] are always there, so count >= 2).
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (rows, len, 1)
        let sum = tokens.broadcast_mul(&mask)?.sum(1)?; // (rows, dims)
        let count = mask.sum(1)?; // (rows, 1)
        let mean = sum.broadcast_div(&count)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12f32, f32::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}

impl Embedder for MiniLm {
    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            vectors.extend(self.embed_batch(batch)?);
        }
        Ok(vectors)
    }
}

impl From<candle_core::Error> for EmbedError {
    fn from(e: candle_core::Error) -> Self {
        EmbedError::Inference(e.to_string())
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_cuts_on_a_character_boundary() {
        assert_eq!(prefix("abc", 5), "abc");
        assert_eq!(prefix("abc", 2), "ab");
        // "é" is two bytes: a cut inside it moves back before it.
        assert_eq!(prefix("aé", 2), "a");
        assert_eq!(prefix("aé", 3), "aé");
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = Path::new("/nonexistent/mosaic-model");
        let err = MiniLm::load(dir).err().expect("a missing dir must not load");
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/mosaic-model"), "{msg}");
        assert!(msg.contains("scripts/install-model"), "{msg}");
    }
}
