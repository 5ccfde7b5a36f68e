using LlmBuild.Core.Models;

namespace LlmBuild.Core.Plan;

/// <summary>The kinds of net a built model contains (the bmodel net contract, DESIGN §7).</summary>
public enum PieceKind
{
    /// <summary>input_ids [1,L] → [1,L,H].</summary>
    Embedding,
    /// <summary>input_ids [1,1] → [1,1,H].</summary>
    EmbeddingCache,
    /// <summary>Prefill block: [1,L,H], position_ids, mask [1,1,L,L] → output, k, v [1,L,kvh,d].</summary>
    Block,
    /// <summary>Decode block: [1,1,H], history_k/v [1,S,kvh,d] → output, new k, v.</summary>
    BlockCache,
    /// <summary>History prefill (UseHistoryKv): input plus history_k/v, mask over history + input.</summary>
    BlockKv,
    /// <summary>SharePrompt: the shared prompt's prefill block of length MaxPrefillKvLength.</summary>
    BlockPrompt,
    /// <summary>[1,H] → top-1 token id, or logits with DoSample.</summary>
    LmHead,
    /// <summary>DoSample: logits → top-1 id.</summary>
    GreedyHead,
    /// <summary>DoSample: logits, recent ids, penalty, temperature, top-k, top-p → id.</summary>
    SampleHead,
    EmbeddingLora,
    EmbeddingCacheLora,
    LmHeadLora,
    /// <summary>Vision-language models: patches [N, C·T·P·P], 2-D rotary position ids [N, 2], attention mask [1,1,N,N]
    /// (plus window mask and reverse index with window attention) → merged image embeddings [N/merge², hidden].</summary>
    Vit,
}

/// <summary>One net of the built model and the weight owner whose npz holds its weights (null: no weights).</summary>
public sealed record Piece(string Name, PieceKind Kind, int Layer, string? WeightOwner)
{
    /// <summary>
    /// History rows of a chunked decode net (block_cache_&lt;i&gt;_&lt;s&gt;, ChunkLength): history_k/v [B, s, kvh, d]
    /// instead of SeqLength rows. Null for every other piece.
    /// </summary>
    public int? History { get; init; }

    public static string BlockName(int layer) => $"block_{layer}";

    /// <summary>The chunked decode net of a layer with <paramref name="rows"/> history rows.</summary>
    public static string SegmentName(int layer, int rows) => $"block_cache_{layer}_{rows}";
}

/// <summary>How a stored weight is kept.</summary>
public enum WeightStorage
{
    /// <summary>The activation dtype (bf16 or f16).</summary>
    Activation,
    /// <summary>Weight-only quantized in the A16MatMul layout: &lt;key&gt;.qweight, .scales, .qzeros.</summary>
    Quantized,
    /// <summary>f32 (constants that must keep full precision).</summary>
    Float32,
}

/// <summary>
/// One tensor of a weight owner's npz. Linear weights keep the checkpoint's [N (out), K (in)] layout.
/// <paramref name="Key"/> is the npz key (and the top.Weight location name); a quantized entry expands to
/// the keys <see cref="WeightKeys"/> gives.
/// </summary>
public sealed record WeightEntry(WeightRole Role, int Layer, string SourceTensor, string Key, WeightStorage Storage, long[] Shape)
{
    /// <summary>
    /// A quantized weight whose stored inputs are permuted (an act-order GPTQ source): the npz holds
    /// <see cref="WeightKeys.InputPermutation"/> and the graph gathers the input by it before the matmul.
    /// </summary>
    public bool InputPermuted { get; init; }

    /// <summary>
    /// The routed expert a per-expert entry belongs to (<see cref="ModelFamily.IsExpertRole"/>); null for every other
    /// entry, so a dense model's resolved.json does not mention it.
    /// </summary>
    public int? Expert { get; init; }

    /// <summary>The vision-tower tensor a <see cref="WeightRole.Vision"/> entry is (its <see cref="Layer"/> is the vision
    /// block, −1 for the patch embedding and the merger); null for every other entry.</summary>
    public VisionRole? Vision { get; init; }

    /// <summary>
    /// A quantized entry's own width when it differs from the model's scheme (a w8 lm_head in a w4 build, or a linear
    /// mixed precision keeps at 8 bits); null: the model's width (<see cref="ResolvedModel.SchemeOf"/>).
    /// </summary>
    public int? Bits { get; init; }
}

/// <summary>A weight owner: one npz shared by every piece that uses these weights (block_i and block_cache_i).</summary>
public sealed record WeightOwner(string Name, IReadOnlyList<WeightEntry> Entries)
{
    public string FileName => $"{Name}_top_weights.npz";
}

/// <summary>npz key names of the quantized layout, in one place.</summary>
public static class WeightKeys
{
    private static string Stem(string key) => key.EndsWith(".weight", StringComparison.Ordinal) ? key[..^".weight".Length] : key;
    public static string QWeight(string key) => Stem(key) + ".qweight";
    public static string Scales(string key) => Stem(key) + ".scales";
    public static string QZeros(string key) => Stem(key) + ".qzeros";
    /// <summary>'&lt;i4' [K]: stored input column c holds the source's input [c] (act-order sources only).</summary>
    public static string InputPermutation(string key) => Stem(key) + ".input_perm";
}
