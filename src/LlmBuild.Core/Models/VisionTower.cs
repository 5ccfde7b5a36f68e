using System.Globalization;
using System.Text.Json.Nodes;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Models;

/// <summary>What a vision-tower tensor is for (DESIGN §13). Block roles exist once per vision block; merger roles once.</summary>
public enum VisionRole
{
    /// <summary>The Conv3d patch embedding [embed, C, T, P, P], used as a linear over C·T·P·P flattened inputs.</summary>
    PatchEmbed,
    Norm1, Norm1Bias,
    /// <summary>The fused q/k/v projection [3·embed, embed] (rows: q, k, v) and its bias.</summary>
    Qkv, QkvBias,
    Proj, ProjBias,
    Norm2, Norm2Bias,
    /// <summary>The plain MLP (Qwen2-VL): fc1 → activation → fc2.</summary>
    Fc1, Fc1Bias, Fc2, Fc2Bias,
    /// <summary>The gated MLP (Qwen2.5-VL): down(act(gate(x)) · up(x)).</summary>
    Gate, GateBias, Up, UpBias, Down, DownBias,
    /// <summary>The merger: a norm over each patch, spatial_merge² patches concatenated, Linear → GELU → Linear.</summary>
    MergerNorm, MergerNormBias, Merger0, Merger0Bias, Merger2, Merger2Bias,
}

/// <summary>The norm a vision tower uses in its blocks and merger.</summary>
public enum VisionNorm { LayerNorm, RmsNorm }

/// <summary>
/// A family's vision tower as data (DESIGN §13): where <c>vision_config</c> keeps each field, the tensor names
/// (<c>{0}</c> = vision block), the norm and MLP kind, and the image geometry the host prepares.
/// </summary>
public sealed record VisionTowerDeclaration
{
    public required IReadOnlyDictionary<VisionRole, string> WeightNames { get; init; }
    public VisionNorm Norm { get; init; } = VisionNorm.LayerNorm;
    /// <summary>True for the gated (SwiGLU-style) MLP of <see cref="VisionRole.Gate"/>/<see cref="VisionRole.Up"/>/<see cref="VisionRole.Down"/>.</summary>
    public bool GatedMlp { get; init; }
    /// <summary>vision_config field of the tower width (Qwen2-VL embed_dim, Qwen2.5-VL hidden_size).</summary>
    public string EmbedDimField { get; init; } = "embed_dim";
    /// <summary>vision_config field of the merger's output width (the LLM hidden size).</summary>
    public string OutHiddenField { get; init; } = "hidden_size";
    /// <summary>vision_config field of the MLP width; null: mlp_ratio × embed.</summary>
    public string? IntermediateField { get; init; }
    /// <summary>Window attention (Qwen2.5-VL): vision_config fields of the window size in pixels and the full-attention blocks.</summary>
    public string? WindowSizeField { get; init; }
    public string? FullAttentionBlocksField { get; init; }
    /// <summary>The default MaxPixels (width, height) when the project does not set it.</summary>
    public required (int Width, int Height) DefaultMaxPixels { get; init; }
    /// <summary>Norm epsilon (Hugging Face builds the vision norms with a fixed 1e-6).</summary>
    public double NormEps { get; init; } = 1e-6;
    /// <summary>Top-level config.json fields of the multimodal token ids; they change no math of the LLM.</summary>
    public IReadOnlyList<string> TokenIdFields { get; init; } =
        ["image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "vision_token_id"];

    public bool IsBlockRole(VisionRole role) => role is not (VisionRole.PatchEmbed or VisionRole.MergerNorm or VisionRole.MergerNormBias
        or VisionRole.Merger0 or VisionRole.Merger0Bias or VisionRole.Merger2 or VisionRole.Merger2Bias);

    public string TensorName(VisionRole role, int block = 0) =>
        WeightNames.TryGetValue(role, out string? pattern) ? string.Format(CultureInfo.InvariantCulture, pattern, block)
            : throw new InvalidOperationException($"The vision tower has no {role}.");

    public bool Has(VisionRole role) => WeightNames.ContainsKey(role);
}

/// <summary>The vision tower's facts, read from config.json's <c>vision_config</c> (see <see cref="VisionTowerDeclaration"/>).</summary>
public sealed record VisionConfig
{
    public required int Depth { get; init; }
    public required int EmbedDim { get; init; }
    public required int NumHeads { get; init; }
    public required int IntermediateSize { get; init; }
    public required int PatchSize { get; init; }
    public required int TemporalPatchSize { get; init; }
    public required int SpatialMergeSize { get; init; }
    public required int InChannels { get; init; }
    public required string HiddenAct { get; init; }
    public required int OutHiddenSize { get; init; }
    /// <summary>Qwen2.5-VL: the attention window in pixels (0 = every block attends to the whole image).</summary>
    public int WindowSize { get; init; }
    /// <summary>Qwen2.5-VL: the blocks that attend to the whole image; the others attend within windows.</summary>
    public IReadOnlyList<int> FullAttentionBlocks { get; init; } = [];
    /// <summary>The token id the chat template puts once per merged image embedding (&lt;|image_pad|&gt;).</summary>
    public required int ImageTokenId { get; init; }
    public required int VisionStartTokenId { get; init; }
    /// <summary>&lt;|vision_end|&gt;, which closes an image in the chat template; −1 when config.json does not say.</summary>
    public int VisionEndTokenId { get; init; } = -1;

    public int HeadDim => EmbedDim / NumHeads;
    /// <summary>C · T · P · P: the length of one flattened patch.</summary>
    public int PatchDim => InChannels * TemporalPatchSize * PatchSize * PatchSize;
    /// <summary>The pixel side of one merged image token (patch × merge, 28 for Qwen2-VL).</summary>
    public int PixelUnit => PatchSize * SpatialMergeSize;
    public int MergeArea => SpatialMergeSize * SpatialMergeSize;
    public bool UsesWindows => WindowSize > 0;
    public bool IsFullAttention(int block) => !UsesWindows || FullAttentionBlocks.Contains(block);

    /// <summary>Reads <c>vision_config</c>; every field the tower needs is required (LLMB0140 names the missing one).</summary>
    public static VisionConfig Read(JsonObject root, VisionTowerDeclaration tower, string source)
    {
        if (root["vision_config"] is not JsonObject v)
            throw new LlmBuildException(ErrorCodes.BadVisionConfig,
                $"{source}: \"vision_config\" is {(root["vision_config"] is null ? "missing" : "not an object")}; a vision-language model needs its vision tower's config.", source);
        int Int(JsonObject o, string field, string where)
        {
            if (o[field] is JsonValue x && x.TryGetValue(out double d) && d == Math.Floor(d) && d is > 0 and <= int.MaxValue) return (int)d;
            throw new LlmBuildException(ErrorCodes.BadVisionConfig,
                o[field] is null ? $"{source}: {where} has no \"{field}\", which the vision tower needs. Add it from the model's original config.json."
                    : $"{source}: {where} \"{field}\" is {o[field]!.ToJsonString()}, expected a positive integer.", source);
        }
        int embed = Int(v, tower.EmbedDimField, "vision_config");
        int heads = Int(v, "num_heads", "vision_config");
        if (embed % heads != 0 || embed / heads % 4 != 0)
            throw new LlmBuildException(ErrorCodes.BadVisionConfig,
                $"{source}: vision_config {tower.EmbedDimField} {embed} over num_heads {heads} must give a head dimension divisible by 4 (2-D rotary).", source);
        int inter = tower.IntermediateField is { } f ? Int(v, f, "vision_config")
            : v["mlp_ratio"] is JsonValue r && r.TryGetValue(out double ratio) && ratio > 0 ? (int)(embed * ratio)
            : throw new LlmBuildException(ErrorCodes.BadVisionConfig, $"{source}: vision_config has no positive \"mlp_ratio\", which sets the vision MLP's width.", source);
        string act = v["hidden_act"] is JsonValue a && a.TryGetValue(out string? s) ? s
            : throw new LlmBuildException(ErrorCodes.BadVisionConfig, $"{source}: vision_config has no \"hidden_act\".", source);
        if (act is not ("quick_gelu" or "silu" or "gelu_pytorch_tanh"))
            throw new LlmBuildException(ErrorCodes.BadVisionConfig,
                $"{source}: vision_config hidden_act '{act}' is not supported by the vision tower (quick_gelu, silu, gelu_pytorch_tanh).", source);
        int inChannels = v["in_chans"] is not null ? Int(v, "in_chans", "vision_config") : v["in_channels"] is not null ? Int(v, "in_channels", "vision_config") : 3;
        var full = new List<int>();
        int window = 0;
        if (tower.WindowSizeField is { } wf)
        {
            window = Int(v, wf, "vision_config");
            if (v[tower.FullAttentionBlocksField!] is not JsonArray list)
                throw new LlmBuildException(ErrorCodes.BadVisionConfig,
                    $"{source}: vision_config has no \"{tower.FullAttentionBlocksField}\" list, which says which vision blocks attend to the whole image.", source);
            foreach (JsonNode? n in list)
                full.Add(n is JsonValue x && x.TryGetValue(out int b) && b >= 0 ? b
                    : throw new LlmBuildException(ErrorCodes.BadVisionConfig, $"{source}: vision_config \"{tower.FullAttentionBlocksField}\" must list block indices.", source));
        }
        var config = new VisionConfig
        {
            Depth = Int(v, "depth", "vision_config"),
            EmbedDim = embed,
            NumHeads = heads,
            IntermediateSize = inter,
            PatchSize = Int(v, "patch_size", "vision_config"),
            TemporalPatchSize = Int(v, "temporal_patch_size", "vision_config"),
            SpatialMergeSize = Int(v, "spatial_merge_size", "vision_config"),
            InChannels = inChannels,
            HiddenAct = act,
            OutHiddenSize = Int(v, tower.OutHiddenField, "vision_config"),
            WindowSize = window,
            FullAttentionBlocks = full,
            ImageTokenId = IntOr(root, "image_token_id") ?? throw Missing(source, "image_token_id"),
            VisionStartTokenId = IntOr(root, "vision_start_token_id") ?? throw Missing(source, "vision_start_token_id"),
            VisionEndTokenId = IntOr(root, "vision_end_token_id") ?? -1,
        };
        if (config.Depth > ModelConfig.MaxLayers || full.Any(b => b >= config.Depth))
            throw new LlmBuildException(ErrorCodes.BadVisionConfig,
                $"{source}: vision_config depth {config.Depth} is absurd or a full-attention block index lies outside it.", source);
        if (window > 0 && window % config.PixelUnit != 0)
            throw new LlmBuildException(ErrorCodes.BadVisionConfig,
                $"{source}: vision_config {tower.WindowSizeField} {window} is not a multiple of patch × merge ({config.PixelUnit}).", source);
        return config;
    }

    private static int? IntOr(JsonObject o, string field) => o[field] is JsonValue x && x.TryGetValue(out int i) && i >= 0 ? i : null;

    private static LlmBuildException Missing(string source, string field) =>
        new(ErrorCodes.BadVisionConfig, $"{source}: \"{field}\" is missing; a vision-language model needs the id of its image tokens.", source);
}

/// <summary>
/// Where image embeddings go in a prompt (Hugging Face's masked_scatter): the k-th image-pad token's embedded row is
/// replaced by the k-th embedding row. The emulator and the reference forward place them by this one rule.
/// </summary>
public static class ImageSplice
{
    /// <summary>The prompt positions that take embedding rows 0, 1, …; refuses a count that differs from the embeddings given.</summary>
    /// <param name="embeddingLength">Floats of image embeddings given ([k, hidden]).</param>
    public static int[] Rows(ReadOnlySpan<int> ids, int imageTokenId, int embeddingLength, int hidden)
    {
        var rows = new List<int>();
        for (int t = 0; t < ids.Length; t++)
        {
            if (ids[t] != imageTokenId) continue;
            if ((rows.Count + 1) * hidden > embeddingLength)
                throw new LlmBuildException(ErrorCodes.ImagePromptMismatch, $"The prompt has more image-pad tokens ({imageTokenId}) than the {embeddingLength / hidden} image embeddings given.");
            rows.Add(t);
        }
        if (rows.Count * hidden != embeddingLength)
            throw new LlmBuildException(ErrorCodes.ImagePromptMismatch, $"The prompt has {rows.Count} image-pad tokens ({imageTokenId}) but {embeddingLength / hidden} image embeddings were given.");
        return rows.ToArray();
    }
}
