using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;

namespace LlmBuild.Core.Plan;

/// <summary>
/// Compile-time JSON metadata (System.Text.Json source generation) for resolved.json, which every stage reads: the
/// reflection-based serializer builds the same metadata at run time, compiling hundreds of methods in each short-lived
/// build process. Options match <see cref="ResolvedModel.Json"/>, so the text is the same either way.
/// </summary>
[JsonSourceGenerationOptions(WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, UseStringEnumConverter = true)]
[JsonSerializable(typeof(ResolvedModel))]
internal sealed partial class ResolvedModelJsonContext : JsonSerializerContext;

/// <summary>Compile-time JSON metadata for calibration/widths.json (options match <see cref="PrecisionChoice"/>'s).</summary>
[JsonSourceGenerationOptions(WriteIndented = true)]
[JsonSerializable(typeof(PrecisionChoice))]
internal sealed partial class PrecisionChoiceJsonContext : JsonSerializerContext;

internal static class PlanJson
{
    /// <summary>A context's metadata first, reflection for every other type (the stage specs' anonymous types).</summary>
    public static IJsonTypeInfoResolver WithReflectionFallback(IJsonTypeInfoResolver generated) =>
        JsonTypeInfoResolver.Combine(generated, new DefaultJsonTypeInfoResolver());
}
