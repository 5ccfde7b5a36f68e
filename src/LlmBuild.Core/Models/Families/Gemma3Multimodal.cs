using System.Text.Json.Nodes;

namespace LlmBuild.Core.Models.Families;

/// <summary>
/// The language model of a multimodal Gemma 3 checkpoint (<c>gemma3</c>, Gemma3ForConditionalGeneration): gemma3_text's
/// block under <c>language_model.</c> names (or, saved by transformers ≥ 4.52, <c>model.language_model.</c>), its fields in config.json's <c>text_config</c> over Gemma3TextConfig's
/// defaults. The SigLIP vision tower and the multimodal projector are not built: their tensors are ignored with a
/// warning (LLMB0160), and the image-token fields of config.json do not concern the text model.
/// </summary>
public static class Gemma3Multimodal
{
    public static ModelFamily Family { get; } = Gemma3.Family with
    {
        Name = "gemma3_multimodal",
        ModelTypes = ["gemma3"],
        WeightNames = Gemma3.Family.WeightNames.ToDictionary(n => n.Key, n => "language_model." + n.Value),
        TextConfigField = "text_config",
        // Gemma3TextConfig's defaults (transformers 4.50): released gemma3 configs give only what differs from them.
        // (Parsed from JSON text, so numbers read back like config.json's own.)
        TextConfigDefaults = (JsonObject)JsonNode.Parse("""
            {"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
             "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
             "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "tie_word_embeddings": true, "rope_theta": 1000000.0,
             "attention_bias": false, "query_pre_attn_scalar": 256, "sliding_window": 4096, "final_logit_softcapping": null,
             "attn_logit_softcapping": null, "rope_scaling": null, "rope_local_base_freq": 10000.0, "sliding_window_pattern": 6}
            """)!,
        UnbuiltTowerTensors = ["vision_tower.*", "multi_modal_projector.*"],
        // transformers ≥ 4.52 saves Gemma3ForConditionalGeneration as model.language_model.*, model.vision_tower.*,
        // model.multi_modal_projector.* and lm_head.* (its _checkpoint_conversion_mapping); read as the names above.
        SavedNamePrefixes =
        [
            ("model.language_model.", "language_model.model."), ("model.vision_tower.", "vision_tower."),
            ("model.multi_modal_projector.", "multi_modal_projector."), ("lm_head.", "language_model.lm_head."),
        ],
        // The vision tower's config and the image-token ids: the text model's math does not read them.
        IrrelevantConfigFields = ["vision_config", "boi_token_index", "eoi_token_index", "image_token_index", "mm_tokens_per_image"],
    };
}
