using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Stages;

/// <summary>
/// The shapes of the spec files resolve writes (specs/weights/&lt;owner&gt;.json, specs/pieces/&lt;piece&gt;.json,
/// specs/codegen.json, specs/combine.json), as named records with compile-time JSON metadata: a build process then
/// never builds serializers for them at run time. Property names and order are the files' (the records' parameters in
/// order), written with <see cref="ResolvedModel.Json"/>'s options, so the text is what it always was.
/// </summary>
internal static class StageSpecs
{
    public sealed record SourceFile(string File, long Length, long Modified);

    public sealed record OwnerWeights(string Stage, string Sdk, WeightOwner Owner, string ActivationDtype, QuantScheme Weights,
        JsonObject? QuantizationConfig, string ModelDir, SourceFile[] Sources, CalibrationSettings? Calibration);

    public sealed record Owner(string Stage, string Sdk, string WeightsIdentity, string Constants, OwnerWeights Weights);

    public sealed record GraphOptions(int SeqLength, int PrefillLength, int Batch, bool Dynamic, bool DoSample, int LoraMaxRank, int MaxPrefillKvLength,
        bool UseHistoryKv, int ChunkLength, bool SharePrompt, bool EmbeddingDisk, int NumDevice, string DistributeStrategy, int VitPatches);

    public sealed record PieceSpec(string Stage, string Sdk, Piece Piece, string Family, ModelConfig Config, GraphOptions Options, string ActivationDtype,
        QuantScheme Weights, bool QuantizeLmHead, bool QuantizeVit, bool FinalNormInLastBlock, IReadOnlyList<WeightEntry>? OwnerEntries);

    public sealed record Codegen(string Stage, string Sdk, string CodegenBackend, string Chip, int NumCore, int NumDevice, string DistributeStrategy,
        int DeviceMemoryMiB, string ActivationDtype);

    public sealed record Combine(string Stage, string Sdk, string Name, string Chip, bool EmbeddingDisk, int NumDevice, string DistributeStrategy, string[] Pieces);
}

/// <summary>Compile-time JSON metadata for <see cref="StageSpecs"/> (options match <see cref="ResolvedModel.Json"/>).</summary>
[JsonSourceGenerationOptions(WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, UseStringEnumConverter = true)]
[JsonSerializable(typeof(StageSpecs.OwnerWeights))]
[JsonSerializable(typeof(StageSpecs.Owner))]
[JsonSerializable(typeof(StageSpecs.PieceSpec))]
[JsonSerializable(typeof(StageSpecs.Codegen))]
[JsonSerializable(typeof(StageSpecs.Combine))]
internal sealed partial class StageSpecsJsonContext : JsonSerializerContext;
