namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("A project property has an invalid value.")]
    public const string InvalidProperty = "LLMB0001";
    [Code("The model directory or its config.json is missing.")]
    public const string ModelNotFound = "LLMB0002";
    [Code("config.json cannot be parsed or lacks a required field.")]
    public const string BadModelConfig = "LLMB0003";
    [Code("The model_type is not supported.")]
    public const string UnsupportedModelType = "LLMB0004";
    [Code("Two project properties contradict each other.")]
    public const string ConflictingProperties = "LLMB0005";
    [Code("The checkpoint lacks a tensor the model family requires, or its shape disagrees with config.json.")]
    public const string MissingWeight = "LLMB0006";
    [Code("The requested Quantize mode does not match the checkpoint's dtype or quantization_config.")]
    public const string QuantizeMismatch = "LLMB0007";
    [Code("A build intermediate is missing or stale; rebuild.")]
    public const string StaleIntermediate = "LLMB0008";
    [Code("A checkpoint tensor is used by no role of the model family: it would be silently dropped. List it in LlmIgnoreTensors to drop it on purpose.")]
    public const string UnusedTensor = "LLMB0010";
    [Code("A config.json field changes the model's math in a way the family does not implement.")]
    public const string UnsupportedConfigField = "LLMB0011";
    [Code("A config.json field is neither understood by the family nor known to be irrelevant to the math (warning).")]
    public const string UnknownConfigField = "LLMB0012";

    [Code("Another build of the same project holds its build lock (obj/llmbuild.lock) for longer than LlmBuildLockTimeoutSeconds.")]
    public const string ProjectBuildLocked = "LLMB0050";
}
