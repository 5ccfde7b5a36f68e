namespace LlmBuild.Core.Diagnostics;

public static partial class ErrorCodes
{
    [Code("The model uses a feature the graph builder does not support (activation, RoPE mode, piece kind).")]
    public const string GraphUnsupported = "LLMB0301";
    [Code("A piece needs a weight its weight owner does not hold.")]
    public const string GraphMissingWeight = "LLMB0302";
    [Code("A weight's shape or the options do not fit the model's dimensions.")]
    public const string GraphBadShape = "LLMB0303";
    [Code("A graph was run with a missing or wrongly shaped input.")]
    public const string GraphBadInput = "LLMB0304";
    [Code("The reference model cannot run on this checkpoint.")]
    public const string ReferenceUnsupported = "LLMB0305";
    [Code("An MLIR module is not in the generic top-dialect form the reader understands: an unexpected token (line and column given).")]
    public const string MlirSyntax = "LLMB0310";
    [Code("An MLIR type is not a static tensor of f32, bf16, f16, si32 or ui8 (or none), or a dimension is negative or too large.")]
    public const string MlirUnsupportedType = "LLMB0311";
    [Code("An MLIR attribute value is of a kind the reader does not map: not a bool, typed integer, f64, string or array of them.")]
    public const string MlirUnsupportedAttribute = "LLMB0312";
    [Code("An MLIR value is used before it is defined, defined twice, or indexed past its op's results.")]
    public const string MlirUndefinedValue = "LLMB0313";
    [Code("An MLIR op's signature disagrees with its operands or results: a type, a result count or a location's name count differs.")]
    public const string MlirTypeMismatch = "LLMB0314";
    [Code("An MLIR module lacks what a piece needs: func @main, a module attribute (weight_file, platform, piece kind), a named top.Weight, or unique tensor names.")]
    public const string MlirBadModule = "LLMB0315";
    [Code("An MLIR module exceeds the reader's limits: nesting depth, a number's range, or a tensor's element count.")]
    public const string MlirLimit = "LLMB0316";
    [Code("A piece's module cannot be split across NumDevice devices: its block does not have the attention/MLP structure tensor parallelism divides.")]
    public const string MlirCannotSplit = "LLMB0317";
    [Code("A mixture-of-experts model (qwen2_moe, qwen3_moe) cannot be split across devices (NumDevice > 1) by the built-in backend.")]
    public const string MoeTensorParallel = "LLMB0330";
}
